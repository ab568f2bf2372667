"""The client side of the socket protocol: a PCIBackend over a connected socket.

`open_remote("unix:/path")`, `open_remote("host:port")` connect to a `tools.gpu_server` (or, with
`dialect="tinygpu"`, to the TinyGPU macOS app, hal.macos) and return a PCIDevice whose backend
turns every access into records (hal.remote.protocol):

- config space: CFG_READ / CFG_WRITE, one round trip each;
- BARs: sizes from INFO (gpuhal) or MAP_BAR per index (TinyGPU); each BAR is a CallbackRegion whose
  reads are MMIO_READ round trips and whose writes are posted MMIO_WRITE records (no round trip;
  the server carries them out in order before the next record). Posted writes are batched: held
  back and sent together with the next request, when BATCH_BYTES are pending, or when the client
  reads the clock, sleeps or polls (FlushingClock: every bounded wait reads the clock, so a write
  whose effect the client waits for, even in shared memory, has left when the wait begins);
- DMA memory: over a Unix socket MAP_SYSMEM_FD, whose answer carries the buffer's memfd
  (SCM_RIGHTS): the client maps it, so the buffer is the same memory on both sides and its Region is
  a plain MemoryRegion. Over TCP MAP_SYSMEM: the buffer lives on the server and its Region is a
  CallbackRegion copying through SYSMEM_READ / SYSMEM_WRITE;
- reset: RESET (the server picks its best method);
- close: the connection closes and the server releases the device.

Losing the device: a connection that closes, fails or stays silent past `timeout_s`, or a
DEVICE_LOST status from the server, marks the backend lost; that access and every later one raise
DeviceLost without touching the socket (a buffer mapped from the server stays readable memory).
Every wait on the socket is bounded by `timeout_s`.
"""
from __future__ import annotations

import ctypes
import json
import logging
import mmap
import os as _os
import socket
import threading

from autogen.linux import pci_regs

from hal.backend import BarResource, DMABuffer, PCIBackend
from hal.errors import (DeviceBusy, DeviceLost, DeviceNotFound, DeviceTimeout,
                        HalError, InvalidArgument, PermissionDenied, UnsupportedOperation)
from hal.os import OS, PAGE_SIZE, host
from hal.pcidev import PCIDevice
from hal.region import CallbackRegion, MemoryRegion, Region
from hal.remote import protocol as proto
from hal.remote.protocol import Command, Request, Status

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 30.0  # longest wait for one response (a reset or a large copy included)
CONNECT_TIMEOUT_S = 5.0
TOKEN_ENV = "GPUHAL_REMOTE_TOKEN"
TOKEN_FILE_ENV = "GPUHAL_REMOTE_TOKEN_FILE"
# PCIe base spec r5.0 sec 7.2.2: PCI Express functions have 4 KiB of configuration space
PCIE_CONFIG_SPACE_SIZE = pci_regs.PCI_CFG_SPACE_EXP_SIZE
DIALECTS = ("gpuhal", "tinygpu")
# posted writes are held back until this many bytes are pending, a request is sent, or the client
# reads the clock (FlushingClock): this layer's choice, a few records' worth per send
BATCH_BYTES = 16 << 10

ERROR_OF_STATUS: dict[Status, type[HalError]] = {
    Status.ERROR: HalError,
    Status.DEVICE_LOST: DeviceLost,
    Status.BUSY: DeviceBusy,
    Status.DENIED: PermissionDenied,
    Status.INVALID: InvalidArgument,
    Status.UNSUPPORTED: UnsupportedOperation,
    Status.TIMEOUT: DeviceTimeout,
}


def parse_target(target: str) -> tuple[str, str | tuple[str, int]]:
    """("unix", path) for "unix:PATH"; ("tcp", (host, port)) for "HOST:PORT" or "HOST"."""
    if target.startswith("unix:"):
        path = target[len("unix:"):]
        if not path:
            raise DeviceNotFound("remote:unix: needs a socket path, e.g. "
                                 "remote:unix:/run/user/1000/gpuhal-gpu.sock")
        return "unix", path
    host_part, separator, port_text = target.rpartition(":")
    if not separator:
        host_part, port_text = target, str(proto.DEFAULT_TCP_PORT)
    if host_part.startswith("[") and host_part.endswith("]"):
        host_part = host_part[1:-1]
    if not host_part or not port_text.isdigit() or not 0 < int(port_text) < 1 << 16:
        raise DeviceNotFound(f"remote:{target}: write remote:HOST:PORT or remote:unix:PATH")
    return "tcp", (host_part, int(port_text))


def connect(target: str, timeout_s: float = CONNECT_TIMEOUT_S) -> socket.socket:
    """A socket connected to `target` (see parse_target); DeviceNotFound when nobody listens."""
    kind, address = parse_target(target)
    if kind == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    else:
        sock = socket.socket(socket.AF_INET6 if ":" in address[0] else socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout_s)
    try:
        sock.connect(address)
    except OSError as exc:
        sock.close()
        raise DeviceNotFound(f"no GPU server answers at {target}: {exc.strerror or exc}; start one with "
                             "`python -m tools.gpu_server`", errno=exc.errno) from exc
    if kind == "tcp":
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def token_from_environment() -> bytes | None:
    """$GPUHAL_REMOTE_TOKEN, else the contents of $GPUHAL_REMOTE_TOKEN_FILE (stripped), else None."""
    text = _os.environ.get(TOKEN_ENV)
    if text:
        return text.strip().encode()
    path = _os.environ.get(TOKEN_FILE_ENV)
    if path:
        try:
            with open(path, "rb") as handle:
                return handle.read().strip()
        except OSError as exc:
            raise PermissionDenied(f"${TOKEN_FILE_ENV} names {path}, which cannot be read: {exc}",
                                   errno=exc.errno) from exc
    return None


class RemoteLease:
    """Stands for the ownership lock: the server holds the device's lock while this client is
    attached, so the client holds it exactly while its connection lives."""

    def __init__(self, backend: "RemoteBackend") -> None:
        self._backend = backend
        self._released = False

    @property
    def held(self) -> bool:
        return not self._released and self._backend.connected

    def release(self) -> None:
        self._released = True


class RemoteBackend(PCIBackend):
    """One PCI function behind a socket (see the module docstring)."""

    name = "remote"

    def __init__(self, sock: socket.socket, target: str, *, dialect: str = "gpuhal",
                 timeout_s: float = DEFAULT_TIMEOUT_S, device_index: int = 0) -> None:
        super().__init__(target)
        if dialect not in DIALECTS:
            raise InvalidArgument(f"dialect {dialect!r} is not one of {', '.join(DIALECTS)}")
        self.sock = sock
        self.target = target
        self.dialect = dialect
        self.timeout_s = timeout_s
        self.device_index = device_index
        self.unix = sock.family == socket.AF_UNIX
        self.remote_bdf: str | None = None
        self.server_backend: str | None = None
        self._config_size = PCIE_CONFIG_SPACE_SIZE
        self._bars: dict[int, BarResource] = {}
        self._lost: str | None = None
        self._closed = False
        self._io = threading.Lock()
        self._pending = bytearray()  # posted writes not sent yet (see FlushingClock)
        self.round_trips = 0
        self.posted = 0
        sock.settimeout(timeout_s)
        self.name = "tinygpu" if dialect == "tinygpu" else "remote"

    # -- connection ----------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return not self._closed and self._lost is None

    def _check(self) -> None:
        if self._closed:
            raise InvalidArgument(f"the connection to {self.target} is closed")
        if self._lost is not None:
            raise DeviceLost(self._lost)

    def _mark_lost(self, why: str) -> DeviceLost:
        if self._lost is None:
            self._lost = (f"{self.target}: {why}; the device is gone for this client: close it and "
                          "open it again once the server has it back")
            log.error("%s", self._lost)
        try:
            self.sock.close()
        except OSError:
            pass
        return DeviceLost(self._lost)

    def _send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except socket.timeout:
            raise self._mark_lost(f"the server took nothing for {self.timeout_s} s") from None
        except OSError as exc:
            raise self._mark_lost(f"sending to the server failed ({exc.strerror or exc})") from None

    def _receive(self, n: int) -> bytes:
        data = bytearray()
        while len(data) < n:
            try:
                chunk = self.sock.recv(n - len(data))
            except socket.timeout:
                raise self._mark_lost(f"no answer from the server within {self.timeout_s} s") from None
            except OSError as exc:
                raise self._mark_lost(f"the connection failed ({exc.strerror or exc})") from None
            if not chunk:
                raise self._mark_lost("the server closed the connection")
            data += chunk
        return bytes(data)

    def _receive_with_fd(self) -> tuple[bytes, int | None]:
        try:
            data, fds, _flags, _address = socket.recv_fds(self.sock, proto.RESPONSE_SIZE, 1)
        except socket.timeout:
            raise self._mark_lost(f"no answer from the server within {self.timeout_s} s") from None
        except OSError as exc:
            raise self._mark_lost(f"the connection failed ({exc.strerror or exc})") from None
        if not data:
            for fd in fds:
                _os.close(fd)
            raise self._mark_lost("the server closed the connection")
        if len(data) < proto.RESPONSE_SIZE:
            data += self._receive(proto.RESPONSE_SIZE - len(data))
        for extra in fds[1:]:
            _os.close(extra)
        return data, (fds[0] if fds else None)

    def request(self, command: Command, *, bar: int = 0, arg0: int = 0, arg1: int = 0, arg2: int = 0,
                payload: bytes = b"", readout: bool = False, with_fd: bool = False,
                what: str = "") -> tuple[proto.Response, bytes, int | None]:
        """Send one request and wait for its response; `readout`: value0 bytes of data follow.
        A non-zero status raises the matching typed error (DEVICE_LOST marks the backend lost)."""
        record = proto.encode_request(Request(command, self.device_index, bar, arg0, arg1, arg2))
        with self._io:
            self._check()
            self._send(self._take_pending() + record + payload)
            if with_fd:
                raw, fd = self._receive_with_fd()
            else:
                raw, fd = self._receive(proto.RESPONSE_SIZE), None
            response = proto.decode_response(raw)
            self.round_trips += 1
            if response.status is not Status.OK:
                if fd is not None:
                    _os.close(fd)
                if response.value0 > proto.MAX_PAYLOAD:
                    raise self._mark_lost(f"an error message of {response.value0:#x} bytes")
                message = self._receive(response.value0).decode("utf-8", errors="replace")
                self._raise(response.status, message or "no reason given", what or command.name)
            if readout and response.value0 > proto.MAX_PAYLOAD:
                raise self._mark_lost(f"the server announced {response.value0:#x} bytes of data")
            data = self._receive(response.value0) if readout and response.value0 else b""
        return response, data, fd

    def _raise(self, status: Status, message: str, what: str) -> None:
        if status is Status.DEVICE_LOST:
            raise self._mark_lost(f"the server reports the device lost: {message}")
        kind = ERROR_OF_STATUS.get(status, HalError)
        raise kind(f"{self.target}: {what}: {message}")

    def post(self, command: Command, *, bar: int, offset: int, data: bytes) -> None:
        """A posted write: the record and its data, no response awaited."""
        record = proto.encode_request(Request(command, self.device_index, bar, offset, len(data)))
        with self._io:
            self._check()
            self._pending += record
            self._pending += data
            self.posted += 1
            if len(self._pending) >= BATCH_BYTES:
                self._send(self._take_pending())

    def _take_pending(self) -> bytes:
        pending = bytes(self._pending)
        self._pending.clear()
        return pending

    def flush(self) -> None:
        """Send the posted writes held back. Never raises: a failure marks the backend lost and
        the next access raises DeviceLost."""
        if not self._pending:
            return
        with self._io:
            if self._pending and self.connected:
                try:
                    self._send(self._take_pending())
                except DeviceLost:
                    pass

    # -- handshake -----------------------------------------------------------------------------
    def handshake(self, token: bytes | None) -> None:
        """AUTH (with a token), then learn config size and BARs (INFO, or MAP_BAR per BAR)."""
        if self.dialect == "tinygpu":
            self.config_read(pci_regs.PCI_VENDOR_ID, 2)
            self._bars = self._bars_by_map_bar()
            return
        if token is not None:
            self.request(Command.AUTH, arg1=len(token), payload=token, what="authentication")
        response, data, _ = self.request(Command.INFO, readout=True, what="INFO")
        try:
            info = json.loads(data)
            self._config_size = int(info["config_size"])
            self.remote_bdf = str(info["bdf"])
            self.server_backend = str(info.get("backend"))
            self._bars = {int(index): BarResource(int(index), int(size))
                          for index, (_address, size) in info["bars"].items()}
        except (ValueError, KeyError, TypeError) as exc:
            raise self._mark_lost(f"the server's INFO answer is malformed ({exc})") from None

    def _bars_by_map_bar(self) -> dict[int, BarResource]:
        bars = {}
        for index in range(pci_regs.PCI_STD_NUM_BARS):
            try:
                response, _, _ = self.request(Command.MAP_BAR, bar=index, what=f"MAP_BAR {index}")
            except (InvalidArgument, UnsupportedOperation):
                continue
            except DeviceLost:
                raise
            except HalError as exc:
                log.debug("%s: BAR%d: %s", self.target, index, exc)
                continue
            if response.value1:
                bars[index] = BarResource(index, response.value1)
        return bars

    # -- PCIBackend ----------------------------------------------------------------------------
    def config_read(self, offset: int, width: int) -> int:
        response, _, _ = self.request(Command.CFG_READ, arg0=offset, arg1=width,
                                      what=f"config read at {offset:#x}")
        return response.value0 & ((1 << (8 * width)) - 1)

    def config_write(self, offset: int, width: int, value: int) -> None:
        self.request(Command.CFG_WRITE, arg0=offset, arg1=width, arg2=value,
                     what=f"config write at {offset:#x}")

    def config_size(self) -> int:
        return self._config_size

    def bar_resources(self) -> dict[int, BarResource]:
        self._check()
        return dict(self._bars)

    def map_bar(self, index: int) -> Region:
        if index not in self._bars:
            raise InvalidArgument(f"BAR{index} of {self.target} is not implemented")
        size = self._bars[index].size

        def read(offset: int, n: int) -> bytes:
            _, data, _ = self.request(Command.MMIO_READ, bar=index, arg0=offset, arg1=n, readout=True,
                                      what=f"BAR{index} read at {offset:#x}")
            return data

        def write(offset: int, data: bytes) -> None:
            self.post(Command.MMIO_WRITE, bar=index, offset=offset, data=bytes(data))

        return CallbackRegion(size, _chunked_read(read), _chunked_write(write))

    def unmap_bar(self, region: Region) -> None:
        """Nothing is mapped on this side; the server keeps its mapping until the client leaves."""

    def alloc_dma(self, size: int) -> DMABuffer:
        pages = -(-size // PAGE_SIZE)
        if self.unix:
            return self._alloc_shared(pages)
        return self._alloc_copied(pages)

    def _alloc_shared(self, pages: int) -> DMABuffer:
        response, _, fd = self.request(Command.MAP_SYSMEM_FD, arg0=pages * PAGE_SIZE, with_fd=True,
                                       what="MAP_SYSMEM_FD")
        mapped, handle = response.value0, response.value1
        if fd is None:
            raise self._mark_lost("MAP_SYSMEM_FD's answer carried no file descriptor")
        try:
            mapping = mmap.mmap(fd, mapped, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        except (OSError, ValueError) as exc:
            raise HalError(f"{self.target}: mapping the shared buffer of {mapped:#x} bytes: {exc}") from exc
        finally:
            _os.close(fd)
        try:
            addresses, header = proto.decode_runs(memoryview(mapping), pages, PAGE_SIZE)
        except proto.ProtocolError:
            mapping.close()
            raise
        mapping[:header] = bytes(header)  # the runs were the server's message, not the buffer's data
        pointer = ctypes.c_char.from_buffer(mapping)
        address = ctypes.addressof(pointer)
        del pointer
        region = MemoryRegion(mapping, mapped, addr=address, owner=mapping)
        return DMABuffer(region, mapped, addresses, _contiguous(addresses), backend_handle=(handle, mapping))

    def _alloc_copied(self, pages: int) -> DMABuffer:
        response, data, _ = self.request(Command.MAP_SYSMEM, arg0=pages * PAGE_SIZE, readout=True,
                                         what="MAP_SYSMEM")
        handle = response.value1
        addresses = [int.from_bytes(data[i:i + 8], "little") for i in range(0, len(data), 8)]
        if len(addresses) < pages:
            raise self._mark_lost(f"MAP_SYSMEM answered {len(addresses)} page addresses for {pages} pages")
        size = pages * PAGE_SIZE

        def read(offset: int, n: int) -> bytes:
            _, chunk, _ = self.request(Command.SYSMEM_READ, bar=handle, arg0=offset, arg1=n, readout=True,
                                       what=f"buffer {handle} read at {offset:#x}")
            return chunk

        def write(offset: int, chunk: bytes) -> None:
            self.post(Command.SYSMEM_WRITE, bar=handle, offset=offset, data=bytes(chunk))

        region = CallbackRegion(size, _chunked_read(read), _chunked_write(write))
        return DMABuffer(region, size, addresses[:pages], _contiguous(addresses[:pages]),
                         backend_handle=(handle, None))

    def free_dma(self, buffer: DMABuffer) -> None:
        handle, mapping = buffer.backend_handle
        if mapping is not None:
            if isinstance(buffer.region, MemoryRegion):
                buffer.region.release()
            try:
                mapping.close()
            except BufferError:
                log.debug("%s: buffer %d still has views; unmapped when they go", self.target, handle)
        if self.dialect == "gpuhal" and self.connected:
            self.request(Command.UNMAP_SYSMEM, bar=handle, what=f"freeing buffer {handle}")

    def reset_methods(self) -> list[str]:
        return ["remote"]

    def reset(self, method: str) -> None:
        if method != "remote":
            raise UnsupportedOperation(f"the {self.name} backend resets only through its server "
                                       "(method \"remote\")")
        self.request(Command.RESET, what="reset")

    def close(self) -> None:
        if self._closed:
            return
        self.flush()
        self._closed = True
        try:
            self.sock.close()
        except OSError as exc:
            log.debug("closing the connection to %s: %s", self.target, exc)


class FlushingClock:
    """The seam the client's PCIDevice (and the drivers above it) wait through: the given seam,
    except that reading the clock, sleeping and polling first send the posted writes held back.
    Every wait is bounded, so every wait reads the clock: a driver that rings a doorbell and then
    waits for its effect (in a register, or in DMA memory shared by fd, which involves no request)
    has the doorbell sent when its wait begins."""

    def __init__(self, inner: OS, backend: RemoteBackend) -> None:
        self._inner = inner
        self._backend = backend

    def __getattr__(self, name: str):
        return getattr(self._inner, name)

    def monotonic(self) -> float:
        self._backend.flush()
        return self._inner.monotonic()

    def sleep(self, seconds: float) -> None:
        self._backend.flush()
        self._inner.sleep(seconds)

    def poll(self, fds: list[int], timeout_s: float) -> list[int]:
        self._backend.flush()
        return self._inner.poll(fds, timeout_s)


def _contiguous(addresses: list[int]) -> bool:
    return all(addresses[i + 1] == addresses[i] + PAGE_SIZE for i in range(len(addresses) - 1))


def _chunked_read(read):
    def chunked(offset: int, n: int) -> bytes:
        if n <= proto.MAX_PAYLOAD:
            return read(offset, n)
        parts = []
        for start in range(0, n, proto.MAX_PAYLOAD):
            parts.append(read(offset + start, min(proto.MAX_PAYLOAD, n - start)))
        return b"".join(parts)
    return chunked


def _chunked_write(write):
    def chunked(offset: int, data: bytes) -> None:
        for start in range(0, max(len(data), 1), proto.MAX_PAYLOAD):
            write(offset + start, data[start:start + proto.MAX_PAYLOAD])
    return chunked


def open_remote(target: str, *, token: bytes | None = None, dialect: str = "gpuhal",
                timeout_s: float = DEFAULT_TIMEOUT_S, os: OS | None = None,
                sock: socket.socket | None = None) -> PCIDevice:
    """Connect to `target` ("unix:PATH" or "HOST:PORT") and return the device it serves.

    token: sent in AUTH first (default: $GPUHAL_REMOTE_TOKEN or $GPUHAL_REMOTE_TOKEN_FILE's contents);
    a TCP server refuses a client without it. dialect: "gpuhal" (tools.gpu_server) or "tinygpu"
    (the macOS app: no gpuhal extension is sent). os: the seam for waits (default the host's)."""
    if dialect not in DIALECTS:
        raise InvalidArgument(f"dialect {dialect!r} is not one of {', '.join(DIALECTS)}")
    if token is None and dialect == "gpuhal":
        token = token_from_environment()
    sock = sock or connect(target)
    backend = RemoteBackend(sock, target, dialect=dialect, timeout_s=timeout_s)
    try:
        backend.handshake(token)
    except BaseException:
        backend.close()
        raise
    device = PCIDevice(backend, FlushingClock(os or host(), backend), rebind_on_close=False)
    device.attach_lock(RemoteLease(backend))
    try:
        device.enable_bus_master()
    except BaseException:
        device.close()
        raise
    return device
