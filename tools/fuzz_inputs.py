"""Input fuzzing of every parser that takes bytes from outside: targets, seeds and mutations.

A `Target` names a parser, where its seed inputs come from (real files: the committed prebuilt code
objects, the synthetic Navi31 firmware, Debian's firmware-amd-graphics when it is cached), the
call that parses one input (`run`) and the errors the parser may raise (`allowed`, hal.errors
classes; for the mock's packet engines their own documented `PacketError`). `check(target, data)`
runs one input under a watchdog (`INPUT_TIMEOUT_S`) and an allocation bound (tracemalloc: at most
`ALLOCATION_SLACK` bytes plus `ALLOCATION_FACTOR` times the input), and raises `ParserBug` for
anything else: an untyped exception (IndexError, struct.error, KeyError, RecursionError...), a
run past the bound, an allocation a size field asked for instead of the input's size.

`inputs(target)` is the hypothesis strategy: a seed mutated by bit flips, truncation, a 32-bit
field overwritten with a boundary value (0, all ones, 2^31, 4 GiB - 1, the input's length...),
bytes inserted or deleted, or raw random bytes. `TARGETS` lists them by name:

| name | parser |
|---|---|
| firmware | drivers.am.firmware.parse_firmware, with the kind and engine of the file |
| discovery | drivers.am.discovery.parse |
| codeobject | compute.amd.codeobject.load |
| msgpack | compute.amd.msgpack.unpack (the metadata notes of the code objects) |
| ih | drivers.am.ih.IHEntry.decode and IHv6_0.decode on a mock GPU brought up once |
| pm4 | the mock MEC's packet engine (mockgpu.amd.mec), one active HQD of a brought-up mock |
| sdma | the mock SDMA engine's packet decoder (mockgpu.amd.sdma) |
| rdna3 | the mock's RDNA3 decoder (mockgpu.amd.rdna3.decoder.decode) |

Adding a parser: append a `Target` (tools.fuzz and tests/fuzz/test_inputs_*.py pick it up).
"""
from __future__ import annotations

import dataclasses
import functools
import pathlib
import struct
import tracemalloc
from typing import Callable

from hypothesis import strategies as st

from hal.errors import HalError
from tools.fuzz_model import StepHung, watchdog

ROOT = pathlib.Path(__file__).resolve().parents[1]
PREBUILT = ROOT / "compute" / "amd" / "kernels" / "prebuilt"
INPUT_TIMEOUT_S = 10.0  # the watchdog on one parse (a healthy one takes milliseconds)
ALLOCATION_SLACK = 32 << 20  # bytes a parse may allocate beyond ALLOCATION_FACTOR x its input
ALLOCATION_FACTOR = 16
# values a size, count or offset field is overwritten with (boundaries of 8, 16, 32 bits, 4 GiB)
BOUNDARY_WORDS = (0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF, 0x80000000,
                  0xFFFFFFFE, 0xFFFFFFFF, 0x1000, 0x100000)
MAX_INPUT = 1 << 20  # inputs are cut to this (the firmware files are up to ~500 KiB)


class ParserBug(AssertionError):
    """A parser crashed, ran unbounded or allocated what a size field asked: names target and cause."""


@dataclasses.dataclass
class Target:
    """One parser: `seeds()` gives (label, bytes) pairs; `run(label, data)` parses one input."""

    name: str
    seeds: Callable[[], list[tuple[str, bytes]]]
    run: Callable[[str, bytes], object]
    allowed: tuple[type[BaseException], ...]
    note: str = ""  # why a seed source is missing, when one is
    prepare: Callable[[], object] | None = None  # set-up outside the measured parse (a bring-up)
    runs: int = 0  # inputs checked in this process


def check(target: Target, label: str, data: bytes) -> None:
    """Parse one input; ParserBug unless it succeeds or raises one of `target.allowed`."""
    target.runs += 1
    if target.prepare is not None:
        target.prepare()
    tracing = tracemalloc.is_tracing()
    if not tracing:
        tracemalloc.start()
    tracemalloc.reset_peak()
    start, _ = tracemalloc.get_traced_memory()
    try:
        with watchdog(INPUT_TIMEOUT_S, f"{target.name} parse of {label!r} ({len(data)} bytes)"):
            target.run(label, data)
    except target.allowed:
        pass
    except StepHung as exc:
        raise ParserBug(f"{target.name}: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - anything untyped is the finding
        raise ParserBug(f"{target.name}: {label!r} ({len(data)} bytes) raised "
                        f"{type(exc).__name__}: {exc}") from exc
    finally:
        _, peak = tracemalloc.get_traced_memory()
        if not tracing:
            tracemalloc.stop()
    allocated = peak - start
    bound = ALLOCATION_SLACK + ALLOCATION_FACTOR * len(data)
    if allocated > bound:
        raise ParserBug(f"{target.name}: {label!r} ({len(data)} bytes) allocated {allocated} bytes "
                        f"(bound {bound})")


# -- mutations -----------------------------------------------------------------------------------
def mutate(data: bytes, operations: list[tuple[str, int, int]]) -> bytes:
    """Apply (kind, position, value) operations; positions wrap around the current length."""
    out = bytearray(data)
    for kind, position, value in operations:
        size = len(out)
        if kind == "flip" and size:
            out[position % size] ^= 1 << (value % 8)
        elif kind == "truncate":
            del out[position % (size + 1):]
        elif kind == "word" and size >= 4:
            at = (position % (size - 3)) & ~3
            word = BOUNDARY_WORDS[value % len(BOUNDARY_WORDS)] if value >= 0 else size
            struct.pack_into("<I", out, at, word & 0xFFFFFFFF)
        elif kind == "byte" and size:
            out[position % size] = value & 0xFF
        elif kind == "insert":
            at = position % (size + 1)
            out[at:at] = bytes([value & 0xFF]) * (1 + value % 16)
        elif kind == "delete" and size:
            at = position % size
            del out[at:at + 1 + value % 16]
    return bytes(out[:MAX_INPUT])


operations = st.lists(st.tuples(st.sampled_from(("flip", "truncate", "word", "byte", "insert", "delete")),
                                st.integers(0, 1 << 24), st.integers(-1, 255)), max_size=8)


def inputs(target: Target) -> st.SearchStrategy[tuple[str, bytes]]:
    """(label, bytes): a mutated seed, or random bytes labelled like a seed."""
    seeds = target.seeds()
    labels = [label for label, _ in seeds]
    mutated = st.builds(lambda seed, ops: (seed[0], mutate(seed[1], ops)), st.sampled_from(seeds),
                        operations)
    raw = st.tuples(st.sampled_from(labels), st.binary(max_size=512))
    return st.one_of(mutated, raw)


# -- seeds and runners ---------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def prebuilt_code_objects() -> tuple[tuple[str, bytes], ...]:
    return tuple((path.name, path.read_bytes()) for path in sorted(PREBUILT.glob("*.co")))


@functools.lru_cache(maxsize=None)
def firmware_seeds() -> tuple[tuple[str, bytes], ...]:
    from drivers.am import firmware as fw
    from mockgpu.amd import firmware_images as images

    found = list(images.build_navi31_set(seed=0).items())
    root = debian_firmware_root()
    if root is not None:
        found += [(name, (root / name).read_bytes()) for name in images.NAVI31_LAYOUTS
                  if (root / name).is_file()]
    return tuple(found)


def debian_firmware_root() -> pathlib.Path | None:
    """The unpacked firmware-amd-graphics in the cache (drivers.am.firmware fetches it), or None."""
    from drivers.am import firmware as fw

    root = fw.sources.unpacked_dir(fw.FIRMWARE_PACKAGE) / fw.PACKAGE_FIRMWARE_ROOT
    return root if (root / "amdgpu").is_dir() else None


def _firmware_spec(label: str):
    from drivers.am import firmware as fw

    specs = {spec.name: spec for spec in fw.firmware_for(fw.NAVI31_IP_VERSIONS)}
    # the pinned package has gc_11_0_0_mes.bin, the fallback of gc_11_0_0_mes_2.bin
    specs["amdgpu/gc_11_0_0_mes.bin"] = specs["amdgpu/gc_11_0_0_mes_2.bin"]
    return specs[label]


def parse_firmware(label: str, data: bytes):
    from drivers.am import firmware as fw

    spec = _firmware_spec(label)
    return fw.parse_firmware(label, data, spec.kind, engine=spec.engine,
                             expected_ip_major=spec.ip_version[0])


def discovery_seeds() -> list[tuple[str, bytes]]:
    from mockgpu.amd import discovery_table

    return [("navi31", discovery_table.build_table()),
            ("navi31-harvested", discovery_table.build_table(harvested=((1, 0),))),
            ("navi31-64-bit-bases", discovery_table.build_table(base_addr_64_bit=True))]


def parse_discovery(label: str, data: bytes):
    from drivers.am import discovery

    return discovery.parse(data)


def load_code_object(label: str, data: bytes):
    from compute.amd import codeobject

    return codeobject.load(data)


_ELF_SHOFF = struct.Struct("<Q")  # e_shoff at byte 0x28 of an ELF64 header
_ELF_SECTIONS = struct.Struct("<HH")  # e_shnum, e_shstrndx at byte 0x3C
_SECTION = struct.Struct("<IIQQQQIIQQ")  # Elf64_Shdr
_NOTE = struct.Struct("<III")  # Elf64_Nhdr
SHT_NOTE = 7  # include/uapi/linux/elf.h


def metadata_notes() -> list[tuple[str, bytes]]:
    """The msgpack payload of every note of the prebuilt code objects (the AMDGPU metadata)."""
    found = []
    for name, data in prebuilt_code_objects():
        (shoff,) = _ELF_SHOFF.unpack_from(data, 0x28)
        shnum, _ = _ELF_SECTIONS.unpack_from(data, 0x3C)
        for index in range(shnum):
            fields = _SECTION.unpack_from(data, shoff + index * _SECTION.size)
            if fields[1] != SHT_NOTE:
                continue
            offset, size = fields[4], fields[5]
            position = offset
            while position + _NOTE.size <= offset + size:
                namesz, descsz, _ = _NOTE.unpack_from(data, position)
                desc = position + _NOTE.size + (namesz + 3) // 4 * 4
                found.append((f"{name} note", data[desc:desc + descsz]))
                position = desc + (descsz + 3) // 4 * 4
    return [item for item in found if item[1]]


def unpack_msgpack(label: str, data: bytes):
    from compute.amd import msgpack

    return msgpack.unpack(data)


def code_sections() -> list[tuple[str, bytes]]:
    from compute.amd import codeobject

    found = []
    for name, data in prebuilt_code_objects():
        loaded = codeobject.load(data)
        for program in loaded.programs.values():
            found.append((f"{name}:{program.name}", program.code[program.entry_offset:]))
    return found


def decode_rdna3(label: str, data: bytes):
    from mockgpu.amd.rdna3 import decoder

    return decoder.decode(data)


# -- targets that need a brought-up mock GPU --------------------------------------------------------
class MockSession:
    """One compute.Device("mock:0") kept for a fuzz run's packet and interrupt targets."""

    device = None
    factory = None

    @classmethod
    def get(cls):
        if cls.device is None:
            from compute import device as compute_device
            from tools.fuzz_model import PersistentMock

            cls.factory = PersistentMock()
            previous = compute_device._mock_factory
            compute_device.register_mock_factory(cls.factory)
            try:
                cls.device = compute_device.Device("mock:0", timeout_s=1.0)
            finally:
                compute_device.register_mock_factory(previous)
        return cls.device

    @classmethod
    def gpu(cls):
        cls.get()
        return cls.factory.gpu

    @classmethod
    def drain(cls) -> None:
        """Read and drop what the IH holds (faults the fuzzed packets caused), so no later call on
        the device raises them."""
        cls.get().backend.ih.process()

    @classmethod
    def close(cls) -> None:
        pm4_seeds.cache_clear()
        sdma_seeds.cache_clear()
        if cls.device is not None:
            try:
                cls.device.backend.close()
            except HalError:
                pass
            cls.device = None
            cls.factory.dispose()


def ih_seeds() -> list[tuple[str, bytes]]:
    from autogen.amd import irqsrcs_gfx_11_0_0 as sources
    from autogen.amd import soc15_ih_clientid as clients
    from mockgpu.amd.ih import encode_entry

    from drivers.am.ih import VM_FAULT_SOURCES

    MockSession.get()  # the bring-up happens here, not inside the first checked input
    (vmc, vmc_fault), (gfx, gfx_fault) = VM_FAULT_SOURCES
    return [
        ("vm fault mmhub", encode_entry(vmc, vmc_fault, src_data=(0x12345, 0x1F, 0, 0))),
        ("vm fault gfxhub", encode_entry(gfx, gfx_fault, src_data=(0x54321, 0x3, 0, 0))),
        ("eop", encode_entry(clients.SOC21_IH_CLIENTID_GRBM_CP,
                             sources.GFX_11_0_0__SRCID__CP_EOP_INTERRUPT)),
        ("bad opcode", encode_entry(clients.SOC21_IH_CLIENTID_GRBM_CP,
                                    sources.GFX_11_0_0__SRCID__CP_BAD_OPCODE_ERROR, ring_id=3)),
        ("sq", encode_entry(clients.SOC21_IH_CLIENTID_GRBM_CP,
                            sources.GFX_11_0_0__SRCID__SQ_INTERRUPT_ID, src_data=(0, 0x4000000, 0, 0))),
    ]


def decode_ih(label: str, data: bytes):
    from drivers.am.ih import ENTRY_BYTES, IHEntry

    ih = MockSession.get().backend.ih
    entry = IHEntry.decode(data[:ENTRY_BYTES].ljust(ENTRY_BYTES, b"\0"))
    return ih.decode(entry)


@functools.lru_cache(maxsize=None)
def pm4_seeds() -> tuple[tuple[str, bytes], ...]:
    dev = MockSession.get()
    queue = dev.compute_queue
    signal = dev.timeline
    program = dev.load(PREBUILT / "vector_add.co", "vector_add_i32")
    scratch = [dev.allocate(4096) for _ in range(3)]
    launch = program.prepare((*scratch, 64), 64, 64, queue)
    queue._words = []  # what prepare recorded is not submitted
    recordings = {
        "signal": queue._emit_signal(signal, signal.value),
        "wait": queue._emit_wait(signal, 0),
        "timestamp": queue._emit_timestamp(signal),
        "barrier": queue._emit_barrier(),
        "launch": queue._emit_exec(launch),
    }
    return tuple((name, struct.pack(f"<{len(words)}I", *words)) for name, words in recordings.items()
                 if words)


def run_pm4(label: str, data: bytes):
    """The MEC executes the packets in `data` on the kernel compute queue's HQD, as if they were in
    its ring (the ring's own pointers are left alone); stops at the first refused packet."""
    from mockgpu.amd import mec as mec_module

    gpu = MockSession.gpu()
    mec = gpu.mec
    hqd = next(q for q in mec.queues.values() if q.active)
    words = list(struct.unpack(f"<{len(data) // 4}I", data[:len(data) // 4 * 4]))
    saved = (hqd.rptr, hqd.ib, hqd.hung, hqd.error, mec.error, mec.instruction_budget)
    mec.instruction_budget = 20_000
    position = 0

    def fetch(count: int) -> list[int]:
        if position + count > len(words):
            raise mec_module._Pending()
        return words[position:position + count]

    try:
        while position < len(words):
            try:
                position += mec._execute(hqd, fetch, hqd.vmid, in_ib=False)
            except mec_module._IBStarted:
                mec._run_ib(hqd)
                position += mec_module.HEADER_DWORDS + mec_module.INDIRECT_BUFFER_BODY
    except (mec_module._Pending, mec_module._Hung):
        pass
    finally:
        hqd.rptr, hqd.ib, hqd.hung, hqd.error, mec.error, mec.instruction_budget = saved
        mec.dispatches.clear()
        MockSession.drain()


@functools.lru_cache(maxsize=None)
def sdma_seeds() -> tuple[tuple[str, bytes], ...]:
    dev = MockSession.get()
    queue = dev.copy_queue
    signal = dev.timeline
    source, destination = dev.allocate(4096), dev.allocate(4096)
    recordings = {
        "copy": queue._emit_copy(destination.gpu_address, source.gpu_address, 4096),
        "signal": queue._emit_signal(signal, signal.value),
        "wait": queue._emit_wait(signal, 0),
        "timestamp": queue._emit_timestamp(signal),
    }
    return tuple((name, struct.pack(f"<{len(words)}I", *words)) for name, words in recordings.items()
                 if words)


def run_sdma(label: str, data: bytes):
    """The SDMA engine executes the packets in `data` as if they were in its ring."""
    from mockgpu.amd import sdma as sdma_module

    engine = MockSession.gpu().sdma
    words = list(struct.unpack(f"<{len(data) // 4}I", data[:len(data) // 4 * 4]))
    position = 0

    def fetch(count: int) -> list[int]:
        if position + count > len(words):
            raise sdma_module._Pending()
        return words[position:position + count]

    try:
        while position < len(words):
            position += engine._execute(fetch, in_ib=False)
    except sdma_module._Pending:
        pass
    finally:
        MockSession.drain()


def _packet_errors(module: str) -> tuple[type[BaseException], ...]:
    if module == "mec":
        from mockgpu.amd.mec import PacketError
    else:
        from mockgpu.amd.sdma import PacketError
    return (PacketError,)


def _decoder_errors() -> tuple[type[BaseException], ...]:
    from mockgpu.amd.rdna3.decoder import UnknownInstruction

    return (UnknownInstruction,)


def _targets() -> dict[str, Target]:
    root = debian_firmware_root()
    firmware_note = "" if root is not None else (
        "Debian's firmware-amd-graphics is not cached (python -m drivers.am.firmware --fetch): "
        "seeds are the synthetic files only")
    targets = [
        Target("firmware", lambda: list(firmware_seeds()), parse_firmware, (HalError,), firmware_note),
        Target("discovery", discovery_seeds, parse_discovery, (HalError,)),
        Target("codeobject", lambda: list(prebuilt_code_objects()), load_code_object, (HalError,)),
        Target("msgpack", metadata_notes, unpack_msgpack, (HalError,)),
        Target("ih", ih_seeds, decode_ih, (HalError,), prepare=MockSession.get),
        Target("pm4", lambda: list(pm4_seeds()), run_pm4, _packet_errors("mec"),
               prepare=MockSession.get),
        Target("sdma", lambda: list(sdma_seeds()), run_sdma, _packet_errors("sdma"),
               prepare=MockSession.get),
        Target("rdna3", code_sections, decode_rdna3, _decoder_errors()),
    ]
    return {target.name: target for target in targets}


TARGETS = _targets()
