"""`python -m tools.gpu_server [DEVICE] [--listen unix:PATH|tcp:HOST:PORT] [--token-file F] [--mock]`:
export one local GPU over the TinyGPU socket protocol (hal.remote), for `remote:` clients.

The device (a hal device string; with --mock the mock machine's Navi31) is opened when a client
attaches, with its ownership lock, and closed when the client leaves, so the lock is held exactly
while one client is attached; a second client is refused with an error record naming the first.
The default listener is a Unix socket, `$XDG_RUNTIME_DIR/gpuhal-gpu.sock` (else
`/tmp/gpuhal-gpu-<uid>.sock`), made accessible to its owner only (mode 0600); over it DMA buffers
are shared by file descriptor. `--listen tcp:HOST:PORT` (default host 127.0.0.1) needs
`--token-file`: clients must send that token first, and it is compared in constant time; without a
token the server refuses to listen on TCP. Stops on SIGINT/SIGTERM. Exit status 0 on a clean stop,
2 on a usage error, 1 when the listener or the device cannot be set up.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import sys
import threading
from dataclasses import dataclass, field

import hal
from hal.errors import HalError, InvalidArgument, PermissionDenied
from hal.os import host
from hal.remote import protocol
from hal.remote.server import DeviceServer, SharedMemorySeam

log = logging.getLogger(__name__)

SOCKET_NAME = "gpuhal-gpu.sock"
SOCKET_MODE = 0o600  # only the owner may connect: the socket grants the device
LISTEN_BACKLOG = 4
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


def default_socket_path() -> str:
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return os.path.join(runtime, SOCKET_NAME)
    return f"/tmp/gpuhal-gpu-{os.getuid()}.sock"


def parse_listen(text: str | None) -> tuple[str, object]:
    """("unix", path) or ("tcp", (host, port)) from --listen."""
    if not text:
        return "unix", default_socket_path()
    if text.startswith("unix:") and len(text) > len("unix:"):
        return "unix", text[len("unix:"):]
    if text.startswith("tcp:"):
        rest = text[len("tcp:"):]
        host, separator, port = rest.rpartition(":")
        if not separator:
            host, port = "127.0.0.1", rest
        if not port.isdigit() or not 0 <= int(port) < 1 << 16:
            raise InvalidArgument(f"--listen {text}: the port must be a number 0..65535")
        return "tcp", (host.strip("[]") or "127.0.0.1", int(port))
    raise InvalidArgument(f"--listen {text}: write unix:PATH or tcp:HOST:PORT")


def read_token(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            token = handle.read().strip()
    except OSError as exc:
        raise PermissionDenied(f"cannot read the token file {path}: {exc.strerror}",
                               errno=exc.errno) from exc
    if not token:
        raise InvalidArgument(f"the token file {path} is empty")
    return token


def make_listener(kind: str, address) -> socket.socket:
    if kind == "unix":
        if os.path.exists(address):
            _remove_stale_socket(address)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_mask = os.umask(0o177)  # the socket file is born 0600: no window where others connect
        try:
            listener.bind(address)
        finally:
            os.umask(old_mask)
        os.chmod(address, SOCKET_MODE)
    else:
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
    listener.listen(LISTEN_BACKLOG)
    return listener


def _remove_stale_socket(path: str) -> None:
    """A socket file nobody listens on is left from a crashed server; a live one is an error."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)
        return
    finally:
        probe.close()
    raise InvalidArgument(f"another server listens on {path}; stop it or choose --listen unix:OTHER")


@dataclass
class Served:
    """A running server and what it needs cleaned up; `close()` stops it and removes the socket."""

    server: DeviceServer
    device: str
    target: str
    firmware_dir: str | None = None
    mock: object = None
    socket_path: str | None = None
    extra: dict = field(default_factory=dict)

    def close(self) -> None:
        self.server.stop()
        if self.socket_path and os.path.exists(self.socket_path):
            os.unlink(self.socket_path)
        if self.mock is not None:
            self.mock.close()


def serve(device: str | None = None, listen: str | None = None, *, token: bytes | None = None,
          mock: bool = False, unbind: bool = False, os_seam=None) -> Served:
    """Start serving `device` in a background thread (see the module docstring); returns Served."""
    kind, address = parse_listen(listen)
    if kind == "tcp" and token is None:
        raise PermissionDenied("a TCP listener needs a token: pass --token-file FILE (clients set "
                               "GPUHAL_REMOTE_TOKEN_FILE to the same file); a Unix socket needs none")
    machine = None
    firmware_dir = None
    seam = os_seam
    if mock:
        from tools import mock_machines

        machine = mock_machines.navi31()
        device = device or machine.device
        seam = machine.os
        firmware_dir = machine.firmware_dir
        unbind = True
    if seam is None:
        seam = host()
    if not device:
        device = os.environ.get("GPUHAL_DEVICE")
    if not device:
        raise InvalidArgument("no device: give a device string (pci:..., vfio:..., a BDF) or --mock")

    def open_device(shared: SharedMemorySeam | None):
        return hal.open(device, os=shared or seam, unbind=unbind, rebind_on_close=not mock)

    try:
        listener = make_listener(kind, address)
    except OSError as exc:
        if machine is not None:
            machine.close()
        raise HalError(f"cannot listen on {listen}: {exc.strerror or exc}", errno=exc.errno) from exc
    server = DeviceServer(listener, open_device, token=token, wrap_seam=lambda: SharedMemorySeam(seam))
    server.start()
    target = server.address
    if kind == "tcp" and address[0] not in LOOPBACK_HOSTS:
        log.warning("listening on %s: other machines can reach it; the token is all that guards the GPU "
                    "(and the traffic is not encrypted)", target)
    return Served(server, device, target, firmware_dir, machine, address if kind == "unix" else None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.gpu_server", description=__doc__.splitlines()[0])
    parser.add_argument("device", nargs="?",
                        help="device string (default $GPUHAL_DEVICE; --mock: the mock GPU)")
    parser.add_argument("--listen", help="unix:PATH (default under $XDG_RUNTIME_DIR or /tmp) or "
                                         "tcp:HOST:PORT (the protocol's usual port is "
                                         f"{protocol.DEFAULT_TCP_PORT})")
    parser.add_argument("--token-file", help="file holding the token clients must send (required for tcp:)")
    parser.add_argument("--mock", action="store_true", help="serve the mock machine's Navi31")
    parser.add_argument("--unbind", action="store_true", help="detach the device's kernel driver while a "
                                                              "client is attached (handed back after)")
    parser.add_argument("--json", action="store_true", help="print the listening address as one JSON object")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        token = read_token(args.token_file) if args.token_file else None
        served = serve(args.device, args.listen, token=token, mock=args.mock, unbind=args.unbind)
    except HalError as exc:
        print(f"gpu_server: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, (InvalidArgument, PermissionDenied)) else 1
    done = threading.Event()
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, lambda *_: done.set())
    device_string = f"remote:{served.target}"
    if args.json:
        print(json.dumps({"device": served.device, "listen": served.target, "client": device_string,
                          "firmware_dir": served.firmware_dir}), flush=True)
    else:
        print(f"serving {served.device} on {served.target}; open it as {device_string}", flush=True)
        if served.firmware_dir:
            print(f"mock firmware for the client: GPUHAL_FIRMWARE_DIR={served.firmware_dir}", flush=True)
    try:
        while not done.wait(0.5):
            pass
    finally:
        served.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
