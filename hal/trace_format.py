"""The hardware-trace file format: header, record codes, the writer and the reader.

A trace (docs/tracing.md) is what crossed the HAL seam during one run, in order:

    magic "GPUHALTR" | u16 format version | u16 compression (1: zlib) | u32 header length |
    u32 CRC-32 of the header | header (UTF-8 JSON) | compressed record stream

The header names what was run (`scenario`, `args`) and the device (`bdf`, `backend`,
`vendor_id`, `device_id`, `bars` {index: [size, mappable]}, `config_size`, `presence_register`,
`reset_methods`, `dma_window`, `pid`). The record stream is a sequence of records, each an op code byte
followed by the op's little-endian fields (`LAYOUTS`); a block of bytes follows its length field.
Observations (reads, interrupt waits, seam queries) end with a u32 `count`: a run of identical
consecutive observations is one record. The stream ends with an END record holding the number of
records before it, so a trace cut short is told from a complete one.

`TraceWriter` writes, `TraceReader` reads (the header at once, records on iteration). A trace that
is truncated, corrupt, of another version or not a trace at all is `BadTrace` (a
`hal.errors.BadBinary`) naming the byte offset where reading failed.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import struct
import zlib
from typing import Iterator

from hal.errors import BadBinary

MAGIC = b"GPUHALTR"
FORMAT_VERSION = 1
COMPRESSION_ZLIB = 1
ZLIB_LEVEL = 6  # zlib's default trade of speed against size
PREAMBLE = struct.Struct("<8sHHII")  # magic, version, compression, header length, header CRC-32
COUNT = struct.Struct("<I")
FLUSH_BYTES = 1 << 18  # records are compressed in batches of about this many bytes
READ_CHUNK = 1 << 12  # compressed bytes fed to the decompressor at a time (the offset granularity)
MAX_COUNT = (1 << 32) - 1

# op codes
CFG_READ = 1
CFG_WRITE = 2
MMIO_READ = 3
MMIO_WRITE = 4
MMIO_READ_BLOCK = 5
MMIO_WRITE_BLOCK = 6
DMA_ALLOC = 7
DMA_FREE = 8
DMA_CPU = 9
DMA_DEVICE = 10
IRQ_ENABLE = 11
IRQ_DISABLE = 12
IRQ_POLL = 13
IRQ_READ = 14
RESET = 15
RESIZE_BAR = 16
OS_QUERY = 17
MMIO_WRITE_DIGEST = 18
DMA_CPU_DIGEST = 19
FAILED = 20
OS_CHANGE = 21
END = 255

# fixed fields after the op byte; "data" ops follow them with `length` bytes (the last fixed field
# before any count); observations end with COUNT
LAYOUTS: dict[int, struct.Struct] = {
    CFG_READ: struct.Struct("<BHI"),          # width, offset, value
    CFG_WRITE: struct.Struct("<BHI"),         # width, offset, value
    MMIO_READ: struct.Struct("<BBQQ"),        # bar, width, offset, value
    MMIO_WRITE: struct.Struct("<BBQQ"),       # bar, width, offset, value
    MMIO_READ_BLOCK: struct.Struct("<BQI"),   # bar, offset, length (+ data)
    MMIO_WRITE_BLOCK: struct.Struct("<BQI"),  # bar, offset, length (+ data)
    DMA_ALLOC: struct.Struct("<IQQBI"),       # buffer, requested, size, contiguous, pages (+ u64 each)
    DMA_FREE: struct.Struct("<I"),            # buffer
    DMA_CPU: struct.Struct("<IQI"),           # buffer, offset, length (+ data)
    DMA_DEVICE: struct.Struct("<IQI"),        # buffer, offset, length (+ data)
    IRQ_ENABLE: struct.Struct("<BI"),         # kind (IRQ_KINDS index), vectors
    IRQ_DISABLE: struct.Struct("<"),
    IRQ_POLL: struct.Struct("<HB"),           # vector, ready (0: the wait timed out)
    IRQ_READ: struct.Struct("<HQ"),           # vector, interrupts counted
    RESET: struct.Struct("<H"),               # length of the method name (+ ASCII)
    RESIZE_BAR: struct.Struct("<BQ"),         # bar, size
    OS_QUERY: struct.Struct("<I"),            # length of the JSON call (+ JSON): see seam_call()
    OS_CHANGE: struct.Struct("<I"),           # length of the JSON call (+ JSON)
    MMIO_WRITE_DIGEST: struct.Struct("<BQI"),  # bar, offset, length (+ DIGEST_BYTES)
    DMA_CPU_DIGEST: struct.Struct("<IQI"),     # buffer, offset, length (+ DIGEST_BYTES)
    FAILED: struct.Struct("<BH"),             # the op that failed, length of the JSON (+ JSON)
    END: struct.Struct("<Q"),                 # records before END
}
OBSERVATIONS = frozenset({CFG_READ, MMIO_READ, MMIO_READ_BLOCK, IRQ_POLL, IRQ_READ, OS_QUERY})
DATA_OPS = frozenset({MMIO_READ_BLOCK, MMIO_WRITE_BLOCK, DMA_CPU, DMA_DEVICE, RESET, OS_QUERY, OS_CHANGE,
                      FAILED})
DIGEST_OPS = frozenset({MMIO_WRITE_DIGEST, DMA_CPU_DIGEST})
# written blocks longer than this are kept as their first DIGEST_PREFIX bytes and SHA-256 (a replay
# compares writes, so it needs no more; firmware uploads would otherwise fill the trace)
DIGEST_THRESHOLD = 256
DIGEST_PREFIX = 16
DIGEST_BYTES = DIGEST_PREFIX + 32
PAGE_ADDRESS = struct.Struct("<Q")
IRQ_KINDS = ("msi", "msix")
OP_NAMES = {CFG_READ: "config read", CFG_WRITE: "config write", MMIO_READ: "MMIO read",
            MMIO_WRITE: "MMIO write", MMIO_READ_BLOCK: "MMIO block read",
            MMIO_WRITE_BLOCK: "MMIO block write", DMA_ALLOC: "DMA alloc", DMA_FREE: "DMA free",
            DMA_CPU: "DMA CPU writes", DMA_DEVICE: "DMA device writes",
            IRQ_ENABLE: "interrupt enable", IRQ_DISABLE: "interrupt disable",
            IRQ_POLL: "interrupt wait", IRQ_READ: "interrupt count", RESET: "reset",
            RESIZE_BAR: "BAR resize", OS_QUERY: "seam query", OS_CHANGE: "seam change",
            MMIO_WRITE_DIGEST: "MMIO block write", DMA_CPU_DIGEST: "DMA CPU writes",
            FAILED: "failed operation", END: "end"}
# the seam calls a trace journals (hal.trace): queries are observations, the rest changes
SEAM_QUERIES = ("exists", "readlink", "read_text", "listdir", "pread", "read")
SEAM_CHANGES = ("write_text", "open", "close", "pwrite", "write")


def seam_call(call: str, args: list, outcome: dict) -> bytes:
    """The JSON of one seam call: {"call", "args", then "result" or "errno" and "message"};
    bytes are hex strings."""
    return json.dumps({"call": call, "args": args, **outcome}, sort_keys=True).encode()


def written(op: int, fields: tuple, data: bytes) -> tuple[int, tuple, bytes]:
    """The record of a block write (MMIO_WRITE_BLOCK or DMA_CPU with its fields and bytes): the
    bytes themselves, or for a long block the digest form (DIGEST_THRESHOLD)."""
    if len(data) <= DIGEST_THRESHOLD:
        return op, fields, data
    digest = data[:DIGEST_PREFIX] + hashlib.sha256(data).digest()
    return (MMIO_WRITE_DIGEST if op == MMIO_WRITE_BLOCK else DMA_CPU_DIGEST), fields, digest


class BadTrace(BadBinary):
    """A trace file that cannot be read: `offset` is the byte offset in the file where it failed
    (for a fault inside the compressed stream, the start of the chunk that held it)."""

    def __init__(self, message: str, *, offset: int) -> None:
        super().__init__(message)
        self.offset = offset


@dataclasses.dataclass(frozen=True)
class Record:
    """One decoded record. `fields` are the op's fixed fields in `LAYOUTS` order; `data` the bytes
    that follow (block contents, DMA bytes, a name), or the page bus addresses of DMA_ALLOC;
    `count` the length of a run of identical observations (1 for everything else)."""

    op: int
    fields: tuple
    data: bytes | tuple = b""
    count: int = 1

    def describe(self) -> str:
        """A one-line account: `MMIO write32 BAR5+0x1234 = 0x00000001`."""
        return describe(self.op, self.fields, self.data)


def _hex_bytes(data: bytes, limit: int = 16) -> str:
    shown = data[:limit].hex(" ")
    return f"{shown} ..." if len(data) > limit else shown


def _shown(op: int, data: bytes) -> str:
    if op in DIGEST_OPS:
        return f"{_hex_bytes(data[:DIGEST_PREFIX])} ... (sha256 {data[DIGEST_PREFIX:].hex()[:16]})"
    return _hex_bytes(data)


def describe(op: int, fields: tuple, data: bytes | tuple = b"") -> str:
    """A one-line account of an operation (recorded or attempted)."""
    if op in (CFG_READ, CFG_WRITE):
        width, offset, value = fields
        sign = "->" if op == CFG_READ else "="
        return f"config {'read' if op == CFG_READ else 'write'}{8 * width} {offset:#05x} {sign} " \
               f"{value:#0{2 + 2 * width}x}"
    if op in (MMIO_READ, MMIO_WRITE):
        bar, width, offset, value = fields
        sign = "->" if op == MMIO_READ else "="
        verb = "read" if op == MMIO_READ else "write"
        return f"MMIO {verb}{8 * width} BAR{bar}+{offset:#x} {sign} {value:#0{2 + 2 * width}x}"
    if op in (MMIO_READ_BLOCK, MMIO_WRITE_BLOCK, MMIO_WRITE_DIGEST):
        bar, offset, length = fields
        verb = "read" if op == MMIO_READ_BLOCK else "write"
        return f"MMIO {verb} of {length:#x} bytes at BAR{bar}+{offset:#x}: {_shown(op, bytes(data))}"
    if op == DMA_ALLOC:
        buffer, requested, size, contiguous, pages = fields
        first = data[0] if data else 0
        return f"DMA alloc #{buffer} of {requested:#x} bytes ({size:#x}, bus {first:#x}" \
               f"{', contiguous' if contiguous else ''})"
    if op == DMA_FREE:
        return f"DMA free #{fields[0]}"
    if op in (DMA_CPU, DMA_DEVICE, DMA_CPU_DIGEST):
        buffer, offset, length = fields
        who = "device" if op == DMA_DEVICE else "CPU"
        return f"DMA #{buffer}+{offset:#x}: {length:#x} bytes by the {who}: {_shown(op, bytes(data))}"
    if op == FAILED:
        return f"{OP_NAMES.get(fields[0], fields[0])} failed: {bytes(data).decode('utf-8', 'replace')}"
    if op == IRQ_ENABLE:
        kind, vectors = fields
        return f"interrupts on: {vectors} {IRQ_KINDS[kind]} vector(s)"
    if op == IRQ_DISABLE:
        return "interrupts off"
    if op == IRQ_POLL:
        vector, ready = fields
        return f"interrupt wait on vector {vector} -> {'fired' if ready else 'timed out'}"
    if op == IRQ_READ:
        vector, value = fields
        return f"interrupt count of vector {vector} -> {value}"
    if op == RESET:
        return f"reset by {bytes(data).decode('ascii', 'replace')}"
    if op == RESIZE_BAR:
        return f"BAR{fields[0]} resized to {fields[1]:#x} bytes"
    if op in (OS_QUERY, OS_CHANGE):
        try:
            call = json.loads(bytes(data))
        except ValueError:
            return f"seam call {_hex_bytes(bytes(data))}"
        args = ", ".join(repr(arg) for arg in call["args"])
        if "errno" in call:
            return f"{call['call']}({args}) -> errno {call['errno']} ({call.get('message', '')})"
        return f"{call['call']}({args}) -> {call.get('result')!r}"
    if op == END:
        return f"end of trace ({fields[0]} records)"
    return f"op {op} {fields}"


@dataclasses.dataclass
class TraceHeader:
    """What was run and on which device (see the module docstring)."""

    scenario: str
    args: dict
    device: dict
    version: int = FORMAT_VERSION

    def to_json(self) -> dict:
        return {"scenario": self.scenario, "args": self.args, "device": self.device}


class TraceWriter:
    """Writes one trace to `path`. `observe` and `act` append records; `close` ends the trace.

    Identical consecutive observations become one record with a count (a polling loop is one
    record). Records are compressed in batches; nothing is written after close."""

    def __init__(self, path: str, header: TraceHeader) -> None:
        self.path = path
        payload = json.dumps(header.to_json(), sort_keys=True).encode()
        self._file = open(path, "wb")
        self._file.write(PREAMBLE.pack(MAGIC, FORMAT_VERSION, COMPRESSION_ZLIB, len(payload),
                                       zlib.crc32(payload)))
        self._file.write(payload)
        self._compressor = zlib.compressobj(ZLIB_LEVEL)
        self._batch: list[bytes] = []
        self._batch_bytes = 0
        self._pending: bytes | None = None  # the observation a run is counting
        self._pending_count = 0
        self.records = 0
        self.closed = False

    @staticmethod
    def encode(op: int, fields: tuple, data: bytes = b"") -> bytes:
        return bytes((op,)) + LAYOUTS[op].pack(*fields) + data

    def observe(self, op: int, fields: tuple, data: bytes = b"") -> None:
        """An observation; counted into the current run when identical to the previous one."""
        encoded = self.encode(op, fields, data)
        if encoded == self._pending and self._pending_count < MAX_COUNT:
            self._pending_count += 1
            return
        self._flush_pending()
        self._pending = encoded
        self._pending_count = 1

    def act(self, op: int, fields: tuple, data: bytes = b"") -> None:
        """Anything but an observation (writes, allocations, DMA contents, resets)."""
        self._flush_pending()
        self._append(self.encode(op, fields, data))

    def _flush_pending(self) -> None:
        if self._pending is not None:
            self._append(self._pending + COUNT.pack(self._pending_count))
            self._pending = None

    def _append(self, encoded: bytes) -> None:
        self._batch.append(encoded)
        self._batch_bytes += len(encoded)
        self.records += 1
        if self._batch_bytes >= FLUSH_BYTES:
            self._compress_batch()

    def _compress_batch(self) -> None:
        self._file.write(self._compressor.compress(b"".join(self._batch)))
        self._batch = []
        self._batch_bytes = 0

    def close(self) -> None:
        """Write the END record and close the file (idempotent)."""
        if self.closed:
            return
        self.closed = True
        self._flush_pending()
        self._batch.append(self.encode(END, (self.records,)))
        self._compress_batch()
        self._file.write(self._compressor.flush())
        self._file.close()


class TraceReader:
    """Reads a trace: `header` at once (BadTrace if it is not a readable trace of this version),
    records by iteration (BadTrace on a corrupt or truncated stream)."""

    def __init__(self, path: str) -> None:
        self.path = path
        with open(path, "rb") as handle:
            self._raw = handle.read()
        self.header = self._read_header()

    def _read_header(self) -> TraceHeader:
        raw = self._raw
        if len(raw) < PREAMBLE.size:
            raise BadTrace(f"{self.path}: {len(raw)} bytes is too short for a trace preamble "
                           f"({PREAMBLE.size} bytes)", offset=len(raw))
        magic, version, compression, length, crc = PREAMBLE.unpack_from(raw)
        if magic != MAGIC:
            raise BadTrace(f"{self.path}: not a gpuhal trace (magic {magic!r} at byte 0, want {MAGIC!r})",
                           offset=0)
        if version != FORMAT_VERSION:
            raise BadTrace(f"{self.path}: trace format version {version}; this gpuhal reads version "
                           f"{FORMAT_VERSION} (record the trace again with this version)", offset=8)
        if compression != COMPRESSION_ZLIB:
            raise BadTrace(f"{self.path}: unknown compression {compression} (byte 10)", offset=10)
        end = PREAMBLE.size + length
        payload = raw[PREAMBLE.size:end]
        if len(payload) < length:
            raise BadTrace(f"{self.path}: the header is cut short at byte {len(raw)} "
                           f"(it should end at byte {end})", offset=len(raw))
        if zlib.crc32(payload) != crc:
            raise BadTrace(f"{self.path}: the header (bytes {PREAMBLE.size}..{end}) fails its CRC-32",
                           offset=PREAMBLE.size)
        try:
            fields = json.loads(payload)
            header = TraceHeader(str(fields["scenario"]), dict(fields["args"]), dict(fields["device"]),
                                 version)
        except (ValueError, KeyError, TypeError) as exc:
            raise BadTrace(f"{self.path}: the header at byte {PREAMBLE.size} is not a trace header: {exc}",
                           offset=PREAMBLE.size) from exc
        self._stream_start = end
        return header

    def _decompressed(self) -> bytes:
        decompressor = zlib.decompressobj()
        out = []
        raw = self._raw
        position = self._stream_start
        while position < len(raw) and not decompressor.eof:
            chunk = raw[position:position + READ_CHUNK]
            try:
                out.append(decompressor.decompress(chunk))
            except zlib.error as exc:
                raise BadTrace(f"{self.path}: the record stream is corrupt in the bytes from {position} "
                               f"({exc})", offset=position) from exc
            position += len(chunk)
        if not decompressor.eof:
            raise BadTrace(f"{self.path}: the record stream is cut short at byte {len(raw)} (the trace "
                           "was not closed: the run crashed or is still writing)", offset=len(raw))
        return b"".join(out)

    def __iter__(self) -> Iterator[Record]:
        stream = self._decompressed()
        position = 0
        index = 0
        file_end = len(self._raw)
        while True:
            if position >= len(stream):
                raise BadTrace(f"{self.path}: the records end at stream byte {position} without an END "
                               "record", offset=file_end)
            op = stream[position]
            layout = LAYOUTS.get(op)
            if layout is None:
                raise BadTrace(f"{self.path}: record {index} at stream byte {position} has unknown op "
                               f"code {op}", offset=file_end)
            try:
                record, position = _decode(stream, position, op, layout)
            except struct.error as exc:
                raise BadTrace(f"{self.path}: record {index} ({OP_NAMES[op]}) at stream byte {position} "
                               f"is cut short ({exc})", offset=file_end) from exc
            if op == END:
                if record.fields[0] != index:
                    raise BadTrace(f"{self.path}: END says {record.fields[0]} records, {index} were read",
                                   offset=file_end)
                return
            yield record
            index += 1

    def records(self) -> list[Record]:
        return list(self)


def _decode(stream: bytes, position: int, op: int, layout: struct.Struct) -> tuple[Record, int]:
    start = position + 1
    fields = layout.unpack_from(stream, start)
    position = start + layout.size
    data: bytes | tuple = b""
    if op in DATA_OPS or op in DIGEST_OPS:
        if op in DIGEST_OPS:
            length = DIGEST_BYTES
        elif op in (MMIO_READ_BLOCK, MMIO_WRITE_BLOCK, DMA_CPU, DMA_DEVICE):
            length = fields[2]
        else:
            length = fields[-1] if op in (FAILED, OS_QUERY, OS_CHANGE) else fields[0]
        data = stream[position:position + length]
        if len(data) != length:
            raise struct.error(f"{length} data bytes announced, {len(data)} present")
        position += length
    elif op == DMA_ALLOC:
        pages = fields[4]
        end = position + pages * PAGE_ADDRESS.size
        if end > len(stream):
            raise struct.error(f"{pages} page addresses announced")
        data = tuple(value for (value,) in PAGE_ADDRESS.iter_unpack(stream[position:end]))
        position = end
    count = 1
    if op in OBSERVATIONS:
        (count,) = COUNT.unpack_from(stream, position)
        position += COUNT.size
    return Record(op, fields, data, count), position
