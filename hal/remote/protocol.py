"""The TinyGPU socket protocol: fixed-size little-endian request and response records.

Every fact below comes from tinygrad (tinygrad/tinygrad), whose client speaks it to the TinyGPU
macOS app and to its own network server: tinygrad/runtime/support/system.py (`RemoteCmd`,
`RemotePCIDevice._rpc`, `APLRemotePCIDevice`) and extra/remote/serve.py (the server side).

A request is one 33-byte record, `<BIIQQQ`: command (u8), device index (u32), BAR or memory handle
(u32) and three u64 arguments; some commands are followed by a payload. A response is one 17-byte
record, `<BQQ`: status (u8) and two u64 values. Status 0 is success; any other status means the
first value is the length of a UTF-8 message that follows. MMIO_WRITE and SYSMEM_WRITE are posted:
they carry their data and get no response.

What tinygrad's sources do not define, gpuhal defines (docs/transports.md lists it): status codes
other than 0 and 1 (which error it was), and commands from EXTENSION_BASE up: AUTH (a token, needed
over TCP), INFO (config space size and BAR sizes in one round trip) and UNMAP_SYSMEM (free a
buffer). A TinyGPU app never receives them: the `tinygpu:` client does not send them.

`encode_request`/`decode_request` and `encode_response`/`decode_response` validate sizes, commands
and statuses strictly and raise ProtocolError (an InvalidArgument) naming what was wrong.
"""
from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from hal.errors import InvalidArgument

# tinygrad/runtime/support/system.py RemotePCIDevice._rpc:
# struct.pack('<BIIQQQ', cmd, dev_id, bar, a0, a1, a2)
REQUEST = struct.Struct("<BIIQQQ")
# tinygrad/runtime/support/system.py RemotePCIDevice._rpc: struct.unpack('<BQQ', msg) = status, resp0, resp1
RESPONSE = struct.Struct("<BQQ")
REQUEST_SIZE = REQUEST.size  # 33 bytes
RESPONSE_SIZE = RESPONSE.size  # 17 bytes
U64_MAX = (1 << 64) - 1
U32_MAX = (1 << 32) - 1
# tinygrad/runtime/support/system.py APLRemotePCIDevice.alloc_sysmem: the fd memory starts with
# (bus address, byte count) u64 pairs, ended by a pair whose byte count is 0
SYSMEM_RUN = struct.Struct("<QQ")
# extra/remote/serve.py: `port = ... else 6667`; RemotePCIDevice.remote_list uses the same default
DEFAULT_TCP_PORT = 6667
# gpuhal's limit on one payload (a read or write of BAR or buffer data): the server refuses larger
# ones, so a damaged length field cannot make it wait for gigabytes
MAX_PAYLOAD = 64 << 20
CONFIG_WIDTHS = (1, 2, 4)


class Command(enum.IntEnum):
    """Request commands. 0..12: tinygrad/runtime/support/system.py `RemoteCmd` (`range(13)`).
    From EXTENSION_BASE: gpuhal's, which only tools.gpu_server answers."""

    PROBE = 0
    MAP_BAR = 1
    MAP_SYSMEM_FD = 2
    CFG_READ = 3
    CFG_WRITE = 4
    RESET = 5
    MMIO_READ = 6
    MMIO_WRITE = 7
    MAP_SYSMEM = 8
    SYSMEM_READ = 9
    SYSMEM_WRITE = 10
    RESIZE_BAR = 11
    PING = 12
    AUTH = 0x80
    INFO = 0x81
    UNMAP_SYSMEM = 0x82


EXTENSION_BASE = Command.AUTH
# no response follows these (tinygrad: RemotePCIDevice._bulk_write sends and does not wait)
POSTED = frozenset({Command.MMIO_WRITE, Command.SYSMEM_WRITE})
# these carry arg1 bytes of payload after the record (extra/remote/serve.py reads them with
# conn.recv(arg1); PROBE's payload is (mask, device) u32 pairs; AUTH's is gpuhal's)
WITH_PAYLOAD = frozenset({Command.MMIO_WRITE, Command.SYSMEM_WRITE, Command.PROBE, Command.AUTH})


class Status(enum.IntEnum):
    """Response status. 0 and 1 are tinygrad's (extra/remote/serve.py `resp`/`resp_err`); the
    others are gpuhal's, so a client can raise the matching typed error."""

    OK = 0
    ERROR = 1
    DEVICE_LOST = 2
    BUSY = 3
    DENIED = 4
    INVALID = 5
    UNSUPPORTED = 6
    TIMEOUT = 7


class ProtocolError(InvalidArgument):
    """A record that breaks the protocol: wrong size, unknown command or status, bad field."""


@dataclass(frozen=True)
class Request:
    """One request record. `bar` is the BAR index, or the memory handle for SYSMEM_* commands."""

    command: Command
    device: int = 0
    bar: int = 0
    arg0: int = 0
    arg1: int = 0
    arg2: int = 0

    @property
    def payload_size(self) -> int:
        """Bytes that follow the record on the wire."""
        return self.arg1 if self.command in WITH_PAYLOAD else 0


@dataclass(frozen=True)
class Response:
    status: Status
    value0: int = 0
    value1: int = 0


def encode_request(request: Request) -> bytes:
    """The 33-byte record for `request` (its payload is sent after it)."""
    _check_range("device", request.device, U32_MAX)
    _check_range("bar", request.bar, U32_MAX)
    for name in ("arg0", "arg1", "arg2"):
        _check_range(name, getattr(request, name), U64_MAX)
    return REQUEST.pack(int(request.command), request.device, request.bar,
                        request.arg0, request.arg1, request.arg2)


def decode_request(record: bytes) -> Request:
    """Parse a request record; ProtocolError for a wrong size or an unknown command."""
    if len(record) != REQUEST_SIZE:
        raise ProtocolError(f"a request record is {REQUEST_SIZE} bytes, not {len(record)}")
    command, device, bar, arg0, arg1, arg2 = REQUEST.unpack(record)
    try:
        known = Command(command)
    except ValueError:
        raise ProtocolError(f"unknown command {command} (known: "
                            f"{', '.join(f'{c.name}={int(c)}' for c in Command)})") from None
    return Request(known, device, bar, arg0, arg1, arg2)


def encode_response(status: Status, value0: int = 0, value1: int = 0) -> bytes:
    _check_range("value0", value0, U64_MAX)
    _check_range("value1", value1, U64_MAX)
    return RESPONSE.pack(int(status), value0, value1)


def encode_error(status: Status, message: str) -> bytes:
    """An error response and its message (tinygrad extra/remote/serve.py resp_err: length, text)."""
    if status is Status.OK:
        raise ProtocolError("an error response needs a non-zero status")
    text = message.encode("utf-8", errors="replace")
    return encode_response(status, len(text)) + text


def decode_response(record: bytes) -> Response:
    """Parse a response record; ProtocolError for a wrong size or an unknown status."""
    if len(record) != RESPONSE_SIZE:
        raise ProtocolError(f"a response record is {RESPONSE_SIZE} bytes, not {len(record)}")
    status, value0, value1 = RESPONSE.unpack(record)
    try:
        known = Status(status)
    except ValueError:
        # tinygrad treats every non-zero status as a failure: so does gpuhal, as a generic one
        known = Status.ERROR
    return Response(known, value0, value1)


def encode_runs(bus_addresses: list[int], page_size: int) -> bytes:
    """Per-page bus addresses as (address, byte count) runs and the terminating (0, 0) pair."""
    runs: list[list[int]] = []
    for address in bus_addresses:
        if runs and runs[-1][0] + runs[-1][1] == address:
            runs[-1][1] += page_size
        else:
            runs.append([address, page_size])
    return b"".join(SYSMEM_RUN.pack(a, n) for a, n in runs) + SYSMEM_RUN.pack(0, 0)


def decode_runs(blob: bytes | memoryview, pages: int, page_size: int) -> tuple[list[int], int]:
    """The first `pages` page addresses from runs at the start of `blob`, and the bytes the runs
    and their terminator took. ProtocolError when the terminator or enough pages are missing."""
    addresses: list[int] = []
    offset = 0
    while True:
        if offset + SYSMEM_RUN.size > len(blob):
            raise ProtocolError("the shared memory's address runs have no (0, 0) terminator")
        address, count = SYSMEM_RUN.unpack_from(blob, offset)
        offset += SYSMEM_RUN.size
        if count == 0:
            break
        if count % page_size or address % page_size:
            raise ProtocolError(f"address run {address:#x}+{count:#x} is not whole pages")
        addresses.extend(range(address, address + count, page_size))
    if len(addresses) < pages:
        raise ProtocolError(f"the address runs cover {len(addresses)} pages, not the {pages} asked for")
    return addresses[:pages], offset


def check_config_access(offset: int, width: int, limit: int) -> None:
    """The checks a config request must pass (hal.pcidev does the same for local devices)."""
    if width not in CONFIG_WIDTHS:
        raise ProtocolError(f"config access width {width} is not 1, 2 or 4 bytes")
    if offset + width > limit or offset % width:
        raise ProtocolError(f"config offset {offset:#x}+{width} is outside the {limit:#x} bytes or "
                            "not aligned to its width")


def _check_range(name: str, value: int, limit: int) -> None:
    if not 0 <= value <= limit:
        raise ProtocolError(f"{name} {value:#x} does not fit its field (0..{limit:#x})")
