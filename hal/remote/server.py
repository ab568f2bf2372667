"""The serving side of the socket protocol: one local PCIDevice exported to one client at a time.

`DeviceServer(listener, open_device, ...)` accepts connections on a listening socket (Unix or TCP).
The first client that passes authentication gets the device: `open_device()` opens it (taking the
ownership lock) and every later record is carried out on it; when that client disconnects, the
device is closed (its DMA buffers freed, the lock released). A client that connects meanwhile gets
one BUSY error record naming the attached client and is disconnected; the first keeps working.

Records are checked before they reach the device (hal.remote.protocol): a wrong size, an unknown
command, a BAR offset outside the BAR, a buffer handle that does not exist are answered with an
error record and the server serves the next record. A posted write (MMIO_WRITE, SYSMEM_WRITE) has
no response, so its rejection is reported by the response of the next record that has one, which
is then not carried out. A payload larger than protocol.MAX_PAYLOAD cannot be skipped safely: the
connection is closed.

DMA memory: each MAP_SYSMEM(_FD) is a real `PCIDevice.alloc_dma` buffer. Over a Unix socket the
buffer is memfd-backed (`SharedMemorySeam` asks the seam for `alloc_shared` memory) and its fd is
passed with SCM_RIGHTS; its first bytes hold the page runs (protocol.encode_runs). Over TCP the
client reads and writes it with SYSMEM_READ/SYSMEM_WRITE.

Waiting for a record, the session wakes every IDLE_TICK_S to let the device's OS run due work
(`os.sleep(0)`: the mock machine's scheduled engine events) and to notice `stop()`.
"""
from __future__ import annotations

import hmac
import json
import logging
import socket
import sys
import threading
from typing import Callable

from autogen.linux import pci_regs

from hal.backend import DMABuffer
from hal.errors import (DeviceBusy, DeviceLost, DeviceTimeout, HalError, InvalidArgument,
                        PermissionDenied, UnsupportedOperation)
from hal.os import PAGE_SIZE, HostMemory
from hal.pcidev import PCIDevice
from hal.remote import protocol as proto
from hal.remote.protocol import Command, ProtocolError, Request, Status

log = logging.getLogger(__name__)

IDLE_TICK_S = 0.001  # how often a waiting session lets the device's OS run due work
ACCEPT_TICK_S = 0.05  # how often the accept loop looks at stop()
SEND_TIMEOUT_S = 30.0  # a client that does not take a response within this is dropped
REFUSAL_LINGER_S = 1.0  # a refused client's first record is drained for at most this long
# include/linux/socket.h struct ucred (SO_PEERCRED): pid, uid, gid, 4 bytes each
UCRED_FIELD = 4
UCRED_SIZE = 3 * UCRED_FIELD

STATUS_OF_ERROR: list[tuple[type, Status]] = [
    (DeviceLost, Status.DEVICE_LOST),
    (DeviceBusy, Status.BUSY),
    (PermissionDenied, Status.DENIED),
    (InvalidArgument, Status.INVALID),
    (UnsupportedOperation, Status.UNSUPPORTED),
    (DeviceTimeout, Status.TIMEOUT),
]


def status_of(error: BaseException) -> Status:
    for kind, status in STATUS_OF_ERROR:
        if isinstance(error, kind):
            return status
    return Status.ERROR


class SharedMemorySeam:
    """An OS seam whose page allocations are shareable by fd (`alloc_shared`); everything else is
    the wrapped seam's. Give it to hal.open so the backend's DMA buffers can be passed to a client."""

    def __init__(self, inner) -> None:
        self._inner = inner
        self._fds: dict[int, int] = {}

    def __getattr__(self, name: str):
        return getattr(self._inner, name)

    def alloc_locked(self, size: int) -> HostMemory:
        return self._remember(self._inner.alloc_shared(size, lock=True))

    def alloc_pages(self, size: int) -> HostMemory:
        return self._remember(self._inner.alloc_shared(size, lock=False))

    def free_locked(self, mem: HostMemory) -> None:
        self._fds.pop(mem.addr, None)
        self._inner.free_locked(mem)

    def _remember(self, mem: HostMemory) -> HostMemory:
        if mem.fd is not None:
            self._fds[mem.addr] = mem.fd
        return mem

    def fd_of(self, address: int | None) -> int | None:
        """The memfd of the allocation at virtual `address`, if this seam made it."""
        return None if address is None else self._fds.get(address)


class _Closed(Exception):
    """The client went away (or must be dropped); the session ends."""


class Session:
    """One attached client: reads records, carries them out on `device`, answers."""

    def __init__(self, conn: socket.socket, device: PCIDevice, peer: str, unix: bool,
                 seam: SharedMemorySeam | None, stop: threading.Event) -> None:
        self.conn = conn
        self.device = device
        self.peer = peer
        self.unix = unix
        self.seam = seam
        self.stop = stop
        self.buffers: dict[int, DMABuffer] = {}
        self.next_handle = 0
        self.deferred: tuple[Status, str] | None = None
        self.records = 0
        self.bar_infos: dict | None = None
        self.regions: dict[int, object] = {}

    # -- wire --------------------------------------------------------------------------------
    def _receive(self, n: int) -> bytes:
        """Exactly `n` bytes; between records the wait ticks the device's OS."""
        data = bytearray()
        while len(data) < n:
            if self.stop.is_set():
                raise _Closed("the server is stopping")
            try:
                chunk = self.conn.recv(n - len(data))
            except socket.timeout:
                self._tick()
                continue
            except OSError as exc:
                raise _Closed(f"receive failed: {exc}") from exc
            if not chunk:
                raise _Closed("the client closed the connection")
            data += chunk
        return bytes(data)

    def _tick(self) -> None:
        try:
            self.device.os.sleep(0)
        except (HalError, OSError) as exc:
            log.debug("idle tick: %s", exc)

    def _send(self, data: bytes, fds: list[int] | None = None) -> None:
        try:
            self.conn.settimeout(SEND_TIMEOUT_S)
            if fds:
                sent = socket.send_fds(self.conn, [data], fds)
                if sent < len(data):
                    self.conn.sendall(data[sent:])
            else:
                self.conn.sendall(data)
        except OSError as exc:
            raise _Closed(f"send failed: {exc}") from exc
        finally:
            try:
                self.conn.settimeout(IDLE_TICK_S)
            except OSError:
                pass

    def _ok(self, value0: int = 0, value1: int = 0, payload: bytes = b"", fds=None) -> None:
        self._send(proto.encode_response(Status.OK, value0, value1) + payload, fds)

    def _error(self, status: Status, message: str) -> None:
        log.info("%s: refused: %s", self.peer, message)
        self._send(proto.encode_error(status, message))

    # -- loop --------------------------------------------------------------------------------
    def run(self) -> None:
        self.conn.settimeout(IDLE_TICK_S)
        while True:
            header = self._receive(proto.REQUEST_SIZE)
            self.records += 1
            try:
                request = proto.decode_request(header)
            except ProtocolError as exc:
                # an unknown command's payload length is unknown: it is taken to have none
                self._error(Status.INVALID, str(exc))
                continue
            payload = self._payload(request)
            if self.deferred is not None and request.command not in proto.POSTED:
                status, message = self.deferred
                self.deferred = None
                self._error(status, f"an earlier posted write was rejected, so {request.command.name} "
                                    f"was not carried out: {message}")
                continue
            try:
                self._dispatch(request, payload)
            except _Closed:
                raise
            except (HalError, OSError) as exc:
                status = status_of(exc)
                message = f"{request.command.name}: {exc}"
                if request.command in proto.POSTED:
                    if self.deferred is None:
                        self.deferred = (status, message)
                    log.info("%s: posted %s", self.peer, message)
                else:
                    self._error(status, message)

    def _payload(self, request: Request) -> bytes:
        size = request.payload_size
        if size > proto.MAX_PAYLOAD:
            message = (f"{request.command.name} announces a {size:#x}-byte payload, more than the "
                       f"{proto.MAX_PAYLOAD:#x} allowed; the stream cannot be resynchronised")
            try:
                self._error(Status.INVALID, message)
            finally:
                raise _Closed(message)
        return self._receive(size) if size else b""

    # -- commands ----------------------------------------------------------------------------
    def _dispatch(self, request: Request, payload: bytes) -> None:
        command = request.command
        if request.device != 0:
            raise InvalidArgument(f"device index {request.device}: this server exports one device, 0")
        handler = getattr(self, f"_do_{command.name.lower()}", None)
        if handler is None:
            raise UnsupportedOperation(f"{command.name} is not served here")
        handler(request, payload)

    def _do_ping(self, request: Request, payload: bytes) -> None:
        self._ok()

    def _do_auth(self, request: Request, payload: bytes) -> None:
        self._ok()  # checked before the session started; a repeat is harmless

    def _do_probe(self, request: Request, payload: bytes) -> None:
        # tinygrad extra/remote/serve.py PROBE: arg2 vendor, payload (mask, device) u32 pairs,
        # answer: "\n"-joined "<bus>:<index>" lines, value1 the count
        vendor = self.device.vendor_id
        matches = request.arg2 in (0, vendor)
        text = f"{self.device.bdf}:0".encode() if matches else b""
        self._ok(len(text), 1 if matches else 0, text)

    def _do_info(self, request: Request, payload: bytes) -> None:
        bars = {str(info.index): [info.address, info.size] for info in self.device.bars()}
        info = {"bdf": self.device.bdf, "config_size": self.device.backend.config_size(),
                "bars": bars, "backend": self.device.backend.name}
        text = json.dumps(info).encode()
        self._ok(len(text), 0, text)

    def _bar_info(self, index: int):
        """The BAR's address and size (read once per session; a resize reads them again)."""
        if not 0 <= index < pci_regs.PCI_STD_NUM_BARS:
            raise InvalidArgument(f"BAR index {index} is not 0..{pci_regs.PCI_STD_NUM_BARS - 1}")
        if self.bar_infos is None:
            self.bar_infos = {info.index: info for info in self.device.bars()}
        info = self.bar_infos.get(index)
        if info is None:
            raise InvalidArgument(f"BAR{index} of {self.device.bdf} is not implemented")
        return info

    def _do_map_bar(self, request: Request, payload: bytes) -> None:
        info = self._bar_info(request.bar)
        self._ok(info.address, info.size)

    def _do_resize_bar(self, request: Request, payload: bytes) -> None:
        sizes = self.device.rebar_sizes(request.bar)
        if not sizes:
            raise UnsupportedOperation(f"BAR{request.bar} of {self.device.bdf} is not resizable")
        self.bar_infos = None
        self.regions.clear()
        self.device.resize_bar(request.bar, max(sizes))
        self._ok()

    def _do_cfg_read(self, request: Request, payload: bytes) -> None:
        proto.check_config_access(request.arg0, request.arg1, self.device.backend.config_size())
        self._ok(self.device.cfg_read(request.arg0, request.arg1))

    def _do_cfg_write(self, request: Request, payload: bytes) -> None:
        proto.check_config_access(request.arg0, request.arg1, self.device.backend.config_size())
        self.device.cfg_write(request.arg0, request.arg1, request.arg2)
        self._ok()

    def _do_reset(self, request: Request, payload: bytes) -> None:
        method = self.device.reset("auto")
        log.info("%s: reset %s by %s", self.peer, self.device.bdf, method)
        self._ok()

    def _bar_window(self, request: Request, size: int):
        region = self.regions.get(request.bar)
        if region is None:
            region = self.device.bar(self._bar_info(request.bar).index)
            self.regions[request.bar] = region
        _check_window(f"BAR{request.bar}", region.size, request.arg0, size)
        return region

    def _do_mmio_read(self, request: Request, payload: bytes) -> None:
        size = request.arg1
        if size > proto.MAX_PAYLOAD:
            raise InvalidArgument(f"a read of {size:#x} bytes is more than {proto.MAX_PAYLOAD:#x}")
        region = self._bar_window(request, size)
        self._ok(size, 0, _read(region, request.arg0, size))

    def _do_mmio_write(self, request: Request, payload: bytes) -> None:
        region = self._bar_window(request, len(payload))
        _write(region, request.arg0, payload)

    def _new_buffer(self, size: int) -> tuple[int, DMABuffer]:
        if size == 0 or size > proto.MAX_PAYLOAD << 4:
            raise InvalidArgument(f"a system memory buffer of {size:#x} bytes")
        buffer = self.device.alloc_dma(size)
        handle = self.next_handle
        self.next_handle += 1
        self.buffers[handle] = buffer
        return handle, buffer

    def _do_map_sysmem_fd(self, request: Request, payload: bytes) -> None:
        if not self.unix or self.seam is None:
            raise UnsupportedOperation("memory is shared by file descriptor only over a Unix socket; "
                                       "use MAP_SYSMEM")
        handle, buffer = self._new_buffer(request.arg0)
        fd = self.seam.fd_of(buffer.region.addr)
        if fd is None:
            self._free(handle)
            raise UnsupportedOperation(f"the {self.device.backend.name} backend's DMA memory has no "
                                       "file descriptor to pass")
        runs = proto.encode_runs(buffer.bus_addresses, PAGE_SIZE)
        buffer.region.write(0, runs)
        self._ok(buffer.size, handle, fds=[fd])

    def _do_map_sysmem(self, request: Request, payload: bytes) -> None:
        handle, buffer = self._new_buffer(request.arg0)
        blob = b"".join(address.to_bytes(8, "little") for address in buffer.bus_addresses)
        self._ok(len(blob), handle, blob)

    def _buffer(self, handle: int) -> DMABuffer:
        buffer = self.buffers.get(handle)
        if buffer is None:
            raise InvalidArgument(f"no system memory buffer with handle {handle}")
        return buffer

    def _do_sysmem_read(self, request: Request, payload: bytes) -> None:
        size = request.arg1
        if size > proto.MAX_PAYLOAD:
            raise InvalidArgument(f"a read of {size:#x} bytes is more than {proto.MAX_PAYLOAD:#x}")
        buffer = self._buffer(request.bar)
        _check_window(f"buffer {request.bar}", buffer.size, request.arg0, size)
        self._ok(size, 0, buffer.region.read(request.arg0, size))

    def _do_sysmem_write(self, request: Request, payload: bytes) -> None:
        buffer = self._buffer(request.bar)
        _check_window(f"buffer {request.bar}", buffer.size, request.arg0, len(payload))
        buffer.region.write(request.arg0, payload)

    def _do_unmap_sysmem(self, request: Request, payload: bytes) -> None:
        self._buffer(request.bar)
        self._free(request.bar)
        self._ok()

    def _free(self, handle: int) -> None:
        buffer = self.buffers.pop(handle)
        self.device.free_dma(buffer)


def _check_window(what: str, limit: int, offset: int, size: int) -> None:
    if offset + size > limit:
        raise InvalidArgument(f"[{offset:#x}, {offset + size:#x}) is outside {what} of {limit:#x} bytes")


def _read(region, offset: int, size: int) -> bytes:
    """One access of the width asked when it is a register access (4 or 8 bytes, aligned)."""
    if size == 4 and offset % 4 == 0:
        return region.read32(offset).to_bytes(4, "little")
    if size == 8 and offset % 8 == 0:
        return region.read64(offset).to_bytes(8, "little")
    return region.read(offset, size)


def _write(region, offset: int, data: bytes) -> None:
    if len(data) == 4 and offset % 4 == 0:
        region.write32(offset, int.from_bytes(data, "little"))
    elif len(data) == 8 and offset % 8 == 0:
        region.write64(offset, int.from_bytes(data, "little"))
    else:
        region.write(offset, data)


class DeviceServer:
    """Serves one device over `listener` (see the module docstring).

    open_device: opens the device for an attached client (a PCIDevice holding its ownership lock);
    called with the SharedMemorySeam to use when the listener is a Unix socket, else None.
    token: the secret a client must send in AUTH before anything else (None: no AUTH needed).
    """

    def __init__(self, listener: socket.socket, open_device: Callable[[SharedMemorySeam | None], PCIDevice],
                 *, token: bytes | None = None,
                 wrap_seam: Callable[[], SharedMemorySeam] | None = None) -> None:
        self.listener = listener
        self.unix = listener.family == socket.AF_UNIX
        self.open_device = open_device
        self.token = token
        self.wrap_seam = wrap_seam
        self.stopped = threading.Event()
        self.session: Session | None = None
        self.sessions_served = 0
        self._state = threading.Lock()
        self._idle = threading.Condition(self._state)
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        name = self.listener.getsockname()
        if self.unix:
            return f"unix:{name}"
        return f"{name[0]}:{name[1]}"

    def start(self) -> "DeviceServer":
        """Serve in a background thread; returns self."""
        self._thread = threading.Thread(target=self.serve_forever, name="gpu-server", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self.stopped.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        try:
            self.listener.close()
        except OSError:
            pass

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no client is attached (its device closed); False when `timeout_s` passed."""
        with self._idle:
            return self._idle.wait_for(lambda: self.session is None, timeout_s)

    def serve_forever(self) -> None:
        self.listener.settimeout(ACCEPT_TICK_S)
        while not self.stopped.is_set():
            try:
                conn, address = self.listener.accept()
            except socket.timeout:
                continue
            except OSError as exc:
                if not self.stopped.is_set():
                    log.error("accept failed: %s", exc)
                return
            peer = _peer_name(conn, address)
            with self._state:
                busy = self.session
            if busy is not None:
                threading.Thread(target=_refuse, args=(conn, Status.BUSY, (
                    f"the device is in use by another client ({busy.peer}); this server serves one "
                    "client at a time: try again when it disconnects")), daemon=True).start()
                continue
            threading.Thread(target=self._attach, args=(conn, peer), name=f"gpu-session {peer}",
                             daemon=True).start()

    def _attach(self, conn: socket.socket, peer: str) -> None:
        if not self.unix:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # a peer that vanishes without closing (cable, crash of its machine) is found by the
            # kernel's keepalive probes, so the device is not held for ever
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        # a client proves itself before it may take the device: a refused one never holds it
        if self.token is not None and not self._authenticated(conn, peer):
            conn.close()
            return
        with self._state:
            holder = self.session
            if holder is None:
                self.session = Session(conn, None, peer, self.unix, None, self.stopped)
        if holder is not None:
            _refuse(conn, Status.BUSY, f"the device is in use by another client ({holder.peer}); this "
                                       "server serves one client at a time: try again when it disconnects",
                    drain=False)
            return
        device = None
        try:
            seam = self.wrap_seam() if (self.unix and self.wrap_seam is not None) else None
            try:
                device = self.open_device(seam)
            except HalError as exc:
                _refuse(conn, status_of(exc), f"the server could not open its device: {exc}")
                return
            session = Session(conn, device, peer, self.unix, seam, self.stopped)
            with self._state:
                self.session = session
            log.info("%s attached to %s", peer, device.bdf)
            try:
                session.run()
            except _Closed as exc:
                log.info("%s detached: %s", peer, exc)
        finally:
            try:
                conn.close()
            except OSError:
                pass
            if device is not None:
                try:
                    device.close()
                except (HalError, OSError) as exc:
                    log.warning("closing the device after %s left: %s", peer, exc)
            with self._idle:
                self.session = None
                self.sessions_served += 1
                self._idle.notify_all()

    def _authenticated(self, conn: socket.socket, peer: str) -> bool:
        """The first record must be AUTH carrying the token (compared in constant time)."""
        conn.settimeout(SEND_TIMEOUT_S)
        try:
            header = _receive_exact(conn, proto.REQUEST_SIZE)
            request = proto.decode_request(header)
            if request.command is not Command.AUTH or request.arg1 > proto.MAX_PAYLOAD:
                _refuse(conn, Status.DENIED, "this server needs a token: send AUTH with it first "
                                             "(set GPUHAL_REMOTE_TOKEN_FILE on the client)", drain=False)
                return False
            offered = _receive_exact(conn, request.arg1)
        except (OSError, ProtocolError) as exc:
            log.info("%s: no authentication: %s", peer, exc)
            return False
        if not hmac.compare_digest(offered, self.token):
            log.warning("%s offered a wrong token", peer)
            _refuse(conn, Status.DENIED, "wrong token", drain=False)
            return False
        try:
            conn.sendall(proto.encode_response(Status.OK))
        except OSError:
            return False
        return True


def _receive_exact(conn: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise ConnectionError("the client closed the connection")
        data += chunk
    return bytes(data)


def _refuse(conn: socket.socket, status: Status, message: str, drain: bool = True) -> None:
    """Send one error record and close; the client's first record is drained first, so the close
    does not turn into a reset that loses the record (tcp(7): unread data at close sends RST)."""
    try:
        conn.settimeout(REFUSAL_LINGER_S)
        if drain:
            try:
                _receive_exact(conn, proto.REQUEST_SIZE)
            except OSError:
                pass
        conn.sendall(proto.encode_error(status, message))
        conn.shutdown(socket.SHUT_WR)
        while conn.recv(4096):
            pass
    except OSError:
        pass
    finally:
        conn.close()


def _peer_name(conn: socket.socket, address) -> str:
    if conn.family == socket.AF_UNIX:
        try:
            creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, UCRED_SIZE)
            pid = int.from_bytes(creds[:UCRED_FIELD], sys.byteorder)
            return f"pid {pid}"
        except (OSError, AttributeError):
            return "a local client"
    return f"{address[0]}:{address[1]}"
