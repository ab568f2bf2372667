"""tools.gpu_server: TCP needs the token (compared in constant time), one client at a time (a second
is refused with a clear error record while the first keeps working), bad records are answered with
error records and the server keeps serving, and a client that is killed releases the device."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import pytest

import hal
from hal.errors import DeviceBusy, InvalidArgument, PermissionDenied
from hal.lock import OwnershipLock
from hal.remote import protocol as proto
from hal.remote.protocol import Command, Request, Status
from mockgpu import GPU_BDF
from tools import gpu_server

TOKEN = b"s3cret-token"
MMIO_BAR = 5  # the Navi31 register BAR
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def unix_server(tmp_path):
    running = gpu_server.serve(listen=f"unix:{tmp_path}/gpu.sock", mock=True)
    yield running
    running.close()


@pytest.fixture
def tcp_server():
    running = gpu_server.serve(listen="tcp:127.0.0.1:0", mock=True, token=TOKEN)
    yield running
    running.close()


class RawClient:
    """Speaks records by hand, to send what a well-behaved client never would."""

    def __init__(self, target: str) -> None:
        if target.startswith("unix:"):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.connect(target[len("unix:"):])
        else:
            host, port = target.rsplit(":", 1)
            self.sock = socket.create_connection((host, int(port)))
        self.sock.settimeout(5.0)

    def send(self, raw: bytes) -> None:
        self.sock.sendall(raw)

    def ask(self, raw: bytes) -> tuple[Status, int, bytes]:
        self.send(raw)
        response = proto.decode_response(self._exact(proto.RESPONSE_SIZE))
        extra = self._exact(response.value0) if response.status is not Status.OK else b""
        return response.status, response.value0, extra

    def _exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        return data

    def close(self) -> None:
        self.sock.close()


def record(command, **fields) -> bytes:
    return proto.encode_request(Request(command, **fields))


def test_tcp_refuses_a_client_without_the_token_or_with_a_wrong_one(tcp_server, monkeypatch):
    monkeypatch.delenv("GPUHAL_REMOTE_TOKEN", raising=False)
    monkeypatch.delenv("GPUHAL_REMOTE_TOKEN_FILE", raising=False)
    with pytest.raises(PermissionDenied, match="needs a token"):
        hal.open(f"remote:{tcp_server.target}")
    monkeypatch.setenv("GPUHAL_REMOTE_TOKEN", "wrong")
    with pytest.raises(PermissionDenied, match="wrong token"):
        hal.open(f"remote:{tcp_server.target}")
    assert tcp_server.server.wait_idle(5.0)
    monkeypatch.setenv("GPUHAL_REMOTE_TOKEN", TOKEN.decode())
    with hal.open(f"remote:{tcp_server.target}") as pci:
        assert pci.vendor_id == 0x1002


def test_a_tcp_listener_without_a_token_is_refused_at_start():
    with pytest.raises(PermissionDenied, match="token"):
        gpu_server.serve(listen="tcp:127.0.0.1:0", mock=True)
    assert gpu_server.main(["--mock", "--listen", "tcp:127.0.0.1:0"]) == 2


def test_a_second_client_is_refused_and_the_first_keeps_working(unix_server):
    first = hal.open(f"remote:{unix_server.target}")
    bar = first.bar(MMIO_BAR)
    before = bar.read32(0)
    with pytest.raises(DeviceBusy, match="in use by another client"):
        hal.open(f"remote:{unix_server.target}")
    assert bar.read32(0) == before and first.vendor_id == 0x1002
    first.close()
    assert unix_server.server.wait_idle(5.0)
    with hal.open(f"remote:{unix_server.target}") as second:
        assert second.vendor_id == 0x1002


def test_bad_records_are_rejected_and_the_server_keeps_serving(unix_server):
    raw = RawClient(unix_server.target)
    assert raw.ask(record(Command.PING))[0] is Status.OK
    status, _, message = raw.ask(proto.REQUEST.pack(0x7F, 0, 0, 0, 0, 0))
    assert status is Status.INVALID and b"unknown command 127" in message
    status, _, message = raw.ask(record(Command.CFG_READ, arg0=0, arg1=3))
    assert status is Status.INVALID and b"width 3" in message
    status, _, message = raw.ask(record(Command.MMIO_READ, bar=MMIO_BAR, arg0=1 << 20, arg1=4))
    assert status is Status.INVALID and b"outside BAR5" in message
    status, _, message = raw.ask(record(Command.MMIO_READ, bar=3, arg0=0, arg1=4))
    assert status is Status.INVALID and b"BAR3" in message
    status, _, message = raw.ask(record(Command.SYSMEM_READ, bar=42, arg0=0, arg1=4))
    assert status is Status.INVALID and b"handle 42" in message
    # a posted write outside the BAR has no response: the next record reports it, not carried out
    raw.send(record(Command.MMIO_WRITE, bar=MMIO_BAR, arg0=1 << 20, arg1=4) + bytes(4))
    status, _, message = raw.ask(record(Command.CFG_READ, arg0=0, arg1=2))
    assert status is Status.INVALID and b"earlier posted write" in message
    status, value, _ = raw.ask(record(Command.CFG_READ, arg0=0, arg1=2))
    assert status is Status.OK and value == 0x1002
    raw.close()


def test_an_unskippable_payload_ends_that_connection_only(unix_server):
    raw = RawClient(unix_server.target)
    status, _, message = raw.ask(record(Command.MMIO_WRITE, bar=MMIO_BAR, arg1=proto.MAX_PAYLOAD + 1))
    assert status is Status.INVALID and b"cannot be resynchronised" in message
    raw.close()
    assert unix_server.server.wait_idle(5.0)
    with hal.open(f"remote:{unix_server.target}") as pci:
        assert pci.vendor_id == 0x1002


def test_a_killed_client_releases_the_device(unix_server):
    script = textwrap.dedent(f"""
        import sys, time
        import hal
        pci = hal.open({f"remote:{unix_server.target}"!r})
        pci.bar({MMIO_BAR}).read32(0)
        print("attached", flush=True)
        time.sleep(60)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, cwd=ROOT,
                             env={**os.environ, "PYTHONPATH": ROOT})
    try:
        assert child.stdout.readline().strip() == b"attached"
        lock_dir = unix_server.mock.machine.lock_dir
        with pytest.raises(DeviceBusy):
            OwnershipLock(unix_server.mock.os, GPU_BDF, lock_dir).acquire()
        child.kill()
        child.wait(10)
        assert unix_server.server.wait_idle(5.0)
        lock = OwnershipLock(unix_server.mock.os, GPU_BDF, lock_dir)
        lock.acquire()  # the server closed the device: its ownership lock is free
        lock.release()
    finally:
        child.kill()
        child.wait(10)


def test_listen_syntax():
    assert gpu_server.parse_listen("unix:/x.sock") == ("unix", "/x.sock")
    assert gpu_server.parse_listen("tcp:7000") == ("tcp", ("127.0.0.1", 7000))
    assert gpu_server.parse_listen("tcp:0.0.0.0:7000") == ("tcp", ("0.0.0.0", 7000))
    with pytest.raises(InvalidArgument):
        gpu_server.parse_listen("udp:1")


def test_the_unix_socket_is_private(unix_server):
    mode = os.stat(unix_server.socket_path).st_mode & 0o777
    assert mode == gpu_server.SOCKET_MODE


def test_the_remote_benchmark_prints_its_figures(capsys):
    from tools import bench

    assert bench.main(["--json", "remote"]) == 0
    figures = __import__("json").loads(capsys.readouterr().out)[0]["figures"]
    for path in ("direct", "unix", "tcp"):
        assert figures[f"{path}_mmio_reads_per_s"] > 0 and figures[f"{path}_dma_copy_mb_per_s"] > 0


def test_the_command_serves_until_sigterm(tmp_path):
    import json
    import signal

    path = tmp_path / "cli.sock"
    child = subprocess.Popen([sys.executable, "-m", "tools.gpu_server", "--mock", "--json",
                              "--listen", f"unix:{path}"], stdout=subprocess.PIPE, cwd=ROOT,
                             env={**os.environ, "PYTHONPATH": ROOT})
    try:
        announced = json.loads(child.stdout.readline())
        assert announced["client"] == f"remote:unix:{path}" and announced["firmware_dir"]
        with hal.open(announced["client"]) as pci:
            assert pci.vendor_id == 0x1002
        child.send_signal(signal.SIGTERM)
        assert child.wait(10) == 0
        assert not path.exists()  # the socket file goes with the server
    finally:
        child.kill()
        child.wait(10)
