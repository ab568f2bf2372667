"""The TinyGPU socket protocol's records, the remote: and tinygpu: device strings, the macOS
ioreg parser and the tinygpu: socket lookup (no server needed)."""
from __future__ import annotations

import struct
import sys

import pytest

import hal
from hal import devstring
from hal.errors import BackendUnavailable, BadBinary, DeviceNotFound
from hal.macos import ioreg, tinygpu
from hal.remote import client
from hal.remote import protocol as proto
from hal.remote.protocol import Command, ProtocolError, Request, Status


def test_request_and_response_records_have_tinygrads_layout():
    request = Request(Command.CFG_WRITE, 0, 1, 0x100, 2, 0xBEEF)
    record = proto.encode_request(request)
    # tinygrad: struct.pack('<BIIQQQ', cmd, dev_id, bar, a0, a1, a2); RemoteCmd.CFG_WRITE == 4
    assert record == struct.pack("<BIIQQQ", 4, 0, 1, 0x100, 2, 0xBEEF)
    assert len(record) == 33 and proto.decode_request(record) == request
    response = proto.encode_response(Status.OK, 7, 9)
    assert response == struct.pack("<BQQ", 0, 7, 9) and len(response) == 17
    assert proto.decode_response(response) == proto.Response(Status.OK, 7, 9)


def test_tinygrad_command_numbers():
    names = ["PROBE", "MAP_BAR", "MAP_SYSMEM_FD", "CFG_READ", "CFG_WRITE", "RESET", "MMIO_READ",
             "MMIO_WRITE", "MAP_SYSMEM", "SYSMEM_READ", "SYSMEM_WRITE", "RESIZE_BAR", "PING"]
    assert [Command[name] for name in names] == list(range(13))
    assert all(command >= proto.EXTENSION_BASE for command in (Command.AUTH, Command.INFO,
                                                               Command.UNMAP_SYSMEM))


@pytest.mark.parametrize("size", [0, 32, 34])
def test_wrong_sized_records_are_rejected(size):
    with pytest.raises(ProtocolError, match="33 bytes"):
        proto.decode_request(bytes(size))
    with pytest.raises(ProtocolError, match="17 bytes"):
        proto.decode_response(bytes(size % 17 + 18))


def test_unknown_command_and_out_of_range_fields_are_rejected():
    with pytest.raises(ProtocolError, match="unknown command 99"):
        proto.decode_request(struct.pack("<BIIQQQ", 99, 0, 0, 0, 0, 0))
    with pytest.raises(ProtocolError, match="bar"):
        proto.encode_request(Request(Command.MAP_BAR, bar=1 << 32))
    with pytest.raises(ProtocolError, match="arg0"):
        proto.encode_request(Request(Command.CFG_READ, arg0=-1))


def test_error_responses_carry_their_message_and_any_nonzero_status_is_an_error():
    blob = proto.encode_error(Status.INVALID, "bad offset")
    response = proto.decode_response(blob[:17])
    assert response.status is Status.INVALID and blob[17:17 + response.value0] == b"bad offset"
    # a status gpuhal does not know is still a failure, as tinygrad treats every non-zero one
    assert proto.decode_response(struct.pack("<BQQ", 200, 0, 0)).status is Status.ERROR
    with pytest.raises(ProtocolError):
        proto.encode_error(Status.OK, "not an error")


def test_page_runs_round_trip_and_need_their_terminator():
    pages = [0x5000, 0x6000, 0x2000, 0x9000, 0xA000]
    blob = proto.encode_runs(pages, 4096)
    assert len(blob) == 4 * 16  # three runs and (0, 0)
    assert proto.decode_runs(blob, 5, 4096) == (pages, len(blob))
    assert proto.decode_runs(blob + bytes(32), 2, 4096)[0] == pages[:2]
    with pytest.raises(ProtocolError, match="terminator"):
        proto.decode_runs(blob[:-16], 5, 4096)
    with pytest.raises(ProtocolError, match="cover 5 pages"):
        proto.decode_runs(blob, 6, 4096)


def test_payload_sizes_follow_the_command():
    assert Request(Command.MMIO_WRITE, arg1=12).payload_size == 12
    assert Request(Command.MMIO_READ, arg1=12).payload_size == 0
    assert Request(Command.AUTH, arg1=6).payload_size == 6


def test_config_access_checks():
    proto.check_config_access(0x100, 4, 4096)
    for offset, width in [(0, 3), (2, 4), (4094, 4)]:
        with pytest.raises(ProtocolError):
            proto.check_config_access(offset, width, 4096)


def test_device_strings():
    assert devstring.parse("remote:127.0.0.1:6667") == devstring.DeviceString("remote", "127.0.0.1:6667")
    assert devstring.parse("remote:unix:/run/x.sock").bdf == "unix:/run/x.sock"
    assert devstring.parse("tinygpu:").backend == "tinygpu"
    assert client.parse_target("unix:/a/b") == ("unix", "/a/b")
    assert client.parse_target("gpu-box:7000") == ("tcp", ("gpu-box", 7000))
    assert client.parse_target("gpu-box") == ("tcp", ("gpu-box", proto.DEFAULT_TCP_PORT))
    assert client.parse_target("[::1]:7000") == ("tcp", ("::1", 7000))
    for bad in ("unix:", ":80", "host:port", "host:70000"):
        with pytest.raises(DeviceNotFound):
            client.parse_target(bad)


def test_remote_with_nobody_listening_is_device_not_found(tmp_path):
    with pytest.raises(DeviceNotFound, match="tools.gpu_server"):
        hal.open(f"remote:unix:{tmp_path}/none.sock")


@pytest.mark.skipif(sys.platform == "darwin", reason="checks the non-macOS refusal")
def test_tinygpu_is_unavailable_off_macos_with_the_reason():
    with pytest.raises(BackendUnavailable, match="macOS"):
        hal.open("tinygpu:")
    assert "linux" in tinygpu.unavailable_reason("linux")
    with pytest.raises(BackendUnavailable, match="macOS"):
        ioreg.list_pci_devices()


def test_tinygpu_socket_lookup(monkeypatch, tmp_path):
    monkeypatch.delenv(tinygpu.SOCKET_ENV, raising=False)
    monkeypatch.delenv(tinygpu.TINYGRAD_SOCKET_ENV, raising=False)
    monkeypatch.setattr(tinygpu.tempfile, "gettempdir", lambda: str(tmp_path))
    assert tinygpu.socket_path() == f"{tmp_path}/tinygpu.sock"
    monkeypatch.setenv(tinygpu.TINYGRAD_SOCKET_ENV, "/x/apl.sock")
    assert tinygpu.socket_path() == "/x/apl.sock"
    monkeypatch.setenv(tinygpu.SOCKET_ENV, "/x/gpuhal.sock")
    assert tinygpu.socket_path() == "/x/gpuhal.sock"
    assert tinygpu.socket_path("/given.sock") == "/given.sock"


# What `ioreg -a -r -c IOPCIDevice` prints: an XML plist array of IOPCIDevice dictionaries with
# their children; data properties are base64 of the little-endian config values. This sample
# has the Mac's own (not tunnelled) controller, a Thunderbolt enclosure's GPU (Navi31, vendor
# 0x1002 device 0x744c, class 0x030000) with its audio function, and an NVIDIA GPU behind it.
IOREG_SAMPLE = b"""<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<array>
  <dict>
    <key>IOObjectClass</key><string>IOPCIDevice</string>
    <key>IORegistryEntryName</key><string>pci-bridge</string>
    <key>vendor-id</key><data>axAAAA==</data>
    <key>device-id</key><data>AhAAAA==</data>
    <key>class-code</key><data>AAQGAA==</data>
    <key>pcidebug</key><string>0:1:0</string>
  </dict>
  <dict>
    <key>IOObjectClass</key><string>IOPCIDevice</string>
    <key>IORegistryEntryName</key><string>display</string>
    <key>vendor-id</key><data>AhAAAA==</data>
    <key>device-id</key><data>THQAAA==</data>
    <key>class-code</key><data>AAADAA==</data>
    <key>IOPCITunnelled</key><true/>
    <key>pcidebug</key><string>5:0:0</string>
    <key>IORegistryEntryChildren</key>
    <array>
      <dict>
        <key>IOObjectClass</key><string>AppleHDAController</string>
        <key>IOName</key><string>hda</string>
      </dict>
    </array>
  </dict>
  <dict>
    <key>IOObjectClass</key><string>IOPCIDevice</string>
    <key>IOName</key><string>HDEF</string>
    <key>vendor-id</key><data>AhAAAA==</data>
    <key>device-id</key><data>MKsAAA==</data>
    <key>class-code</key><data>AAMEAA==</data>
    <key>IOPCITunnelled</key><true/>
    <key>pcidebug</key><string>5:0:1</string>
  </dict>
  <dict>
    <key>IOObjectClass</key><string>IOPCIDevice</string>
    <key>IORegistryEntryName</key><string>display</string>
    <key>vendor-id</key><data>3hAAAA==</data>
    <key>device-id</key><data>hCIAAA==</data>
    <key>class-code</key><data>AAADAA==</data>
    <key>IOPCITunnelled</key><true/>
    <key>pcidebug</key><string>9:0:0</string>
  </dict>
</array>
</plist>
"""


def test_ioreg_parser_finds_the_thunderbolt_gpus():
    devices = ioreg.parse(IOREG_SAMPLE)
    assert [(d.vendor_id, d.device_id, d.class_code) for d in devices] == [
        (0x106B, 0x1002, 0x060400), (0x1002, 0x744C, 0x030000), (0x1002, 0xAB30, 0x040300),
        (0x10DE, 0x2284, 0x030000)]
    gpus = ioreg.thunderbolt_gpus(devices)
    assert [(g.name, g.location) for g in gpus] == [("display", "5:0:0"), ("display", "9:0:0")]
    assert not devices[0].tunnelled


def test_ioreg_parser_rejects_what_is_not_a_plist():
    with pytest.raises(BadBinary):
        ioreg.parse(b"+-o Root  <class IORegistryEntry>")


def test_host_shared_memory_is_one_set_of_pages_behind_an_fd():
    import mmap
    import os

    from hal.host_os import HostOS

    seam = HostOS()
    memory = seam.alloc_shared(8192, lock=False)
    fd = memory.fd
    assert fd is not None and memory.size == 8192
    other = mmap.mmap(fd, 8192, flags=mmap.MAP_SHARED)  # what a client does with the passed fd
    memory.region.write(4096, b"through the seam")
    assert other[4096:4112] == b"through the seam"
    other[0:5] = b"other"
    assert memory.region.read(0, 5) == b"other"
    other.close()
    seam.free_locked(memory)
    with pytest.raises(OSError):
        os.fstat(fd)  # free_locked closed the memfd


def test_tinygpu_lists_the_thunderbolt_gpus_from_ioreg():
    from types import SimpleNamespace

    def run(command, **_):
        assert command == ioreg.IOREG_COMMAND
        return SimpleNamespace(returncode=0, stdout=IOREG_SAMPLE, stderr=b"")

    rows = tinygpu.list_devices(run=run, platform="darwin")
    assert [(row.device, row.bdf, row.vendor_id) for row in rows] == [
        ("tinygpu:", "5:0:0", 0x1002), ("tinygpu:", "9:0:0", 0x10DE)]
    assert all(row.backends["tinygpu"] == "ok" or "not installed" in row.backends["tinygpu"]
               for row in rows)
    with pytest.raises(BackendUnavailable):
        tinygpu.list_devices(run=run, platform="linux")
