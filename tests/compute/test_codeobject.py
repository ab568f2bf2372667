"""Tests of the AMD code-object loader, its msgpack decoder, the compiler wrapper and the prebuilt library.

The prebuilt code objects are checked against LLVM's own view of them (llvm-readelf-16 --notes for
the metadata, the `.amdhsa_*` directives clang-16 -S emits for the descriptor); those checks skip
when the llvm-16 tools are absent. Malformed inputs must raise BadBinary naming what is wrong.
"""
from __future__ import annotations

import re
import shutil
import struct
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compute.amd import build_kernels, codeobject, compiler, msgpack
from hal.errors import BackendUnavailable, BadBinary

PREBUILT = sorted(compiler.PREBUILT_DIR.glob("*.co"))
SOURCES = sorted(compiler.KERNELS_DIR.glob("*.cl"))
LLVM_MISSING = "llvm-16 tools absent (apt-get install clang-16 lld-16 llvm-16)"
needs_readelf = pytest.mark.skipif(shutil.which("llvm-readelf-16") is None, reason=LLVM_MISSING)
needs_objdump = pytest.mark.skipif(shutil.which("llvm-objdump-16") is None, reason=LLVM_MISSING)
needs_clang = pytest.mark.skipif(shutil.which("clang-16") is None or shutil.which("ld.lld-16") is None,
                                 reason=LLVM_MISSING)

_SHDR = struct.Struct("<IIQQQQIIQQ")
_SYM = struct.Struct("<IBBHQQ")


def _kernel_names(source: Path) -> list[str]:
    return re.findall(r"void\s+(\w+)\s*\(", source.read_text())


def _saxpy() -> bytes:
    return (compiler.PREBUILT_DIR / "saxpy.co").read_bytes()


def _section(data: bytes, name: str) -> codeobject.Section:
    loaded = codeobject.load(data)
    return next(s for s in loaded.sections if s.name == name)


def _note_desc_offset(data: bytes) -> int:
    note = _section(data, ".note")
    namesz = struct.unpack_from("<I", data, note.offset)[0]
    return note.offset + 12 + (namesz + 3) // 4 * 4


def _patch(data: bytes, offset: int, fmt: str, *values: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, *values)
    return bytes(out)


def _kd_symbol_entry(data: bytes, symbol: str) -> int:
    """File offset of `symbol`'s Elf64_Sym in .symtab (the table the loader reads)."""
    loaded = codeobject.load(data)
    symtab = next(s for s in loaded.sections if s.name == ".symtab")
    strtab = loaded.sections[symtab.link]
    for index in range(symtab.size // _SYM.size):
        at = symtab.offset + index * _SYM.size
        name_at = _SYM.unpack_from(data, at)[0]
        end = data.index(b"\0", strtab.offset + name_at)
        if data[strtab.offset + name_at:end] == symbol.encode():
            return at
    raise AssertionError(symbol)


def _kd_file_offset(data: bytes, name: str) -> int:
    program = codeobject.load(data)[name]
    rodata = _section(data, ".rodata")
    return rodata.offset + program.descriptor_address - rodata.address


# --- the prebuilt library ---

def test_every_source_has_a_prebuilt_object_with_its_kernels():
    assert [p.stem for p in PREBUILT] == [s.stem for s in SOURCES]
    for source in SOURCES:
        loaded = codeobject.load_file(str(compiler.PREBUILT_DIR / f"{source.stem}.co"))
        assert sorted(loaded.programs) == sorted(_kernel_names(source))
        assert loaded.mach == "gfx1100"
        assert loaded.code_object_version == compiler.CODE_OBJECT_VERSION


def test_saxpy_program_fields():
    program = codeobject.load(_saxpy())["saxpy"]
    assert [(a.name, a.offset, a.size, a.value_kind) for a in program.args] == [
        ("alpha", 0, 4, "by_value"), ("x", 8, 8, "global_buffer"), ("y", 16, 8, "global_buffer"),
        ("n", 24, 4, "by_value")]
    assert program.args[1].address_space == "global"
    assert program.args[1].is_const and not program.args[2].is_const
    assert program.kernarg_size == 28
    assert program.wavefront_size == 32
    # workgroup_size_x is read from the dispatch packet: dispatch ptr in s[0:1], kernarg ptr in s[2:3]
    assert [(s.name, s.first, s.count) for s in program.user_sgprs] == [
        ("dispatch_ptr", 0, 2), ("kernarg_segment_ptr", 2, 2)]
    assert program.system_sgprs[0].name == "workgroup_id_x"
    assert program.system_sgprs[0].first == program.descriptor.user_sgpr_count
    assert program.user_sgpr("queue_ptr") is None
    entry = program.code[program.entry_offset:program.entry_offset + program.code_size]
    assert len(entry) == program.code_size > 0


def test_reduction_and_matmul_use_lds_and_required_sizes():
    reduce_program = codeobject.load_file(str(compiler.PREBUILT_DIR / "reduce.co"))["reduce_sum_f32"]
    assert reduce_program.lds_size == 256 * 4
    assert reduce_program.metadata.reqd_workgroup_size == (256, 1, 1)
    matmul = codeobject.load_file(str(compiler.PREBUILT_DIR / "matmul.co"))["matmul_f32"]
    assert matmul.lds_size == 2 * 16 * 16 * 4
    assert [s.name for s in matmul.system_sgprs] == ["workgroup_id_x", "workgroup_id_y"]


def test_image_places_descriptor_and_code_at_their_addresses():
    loaded = codeobject.load(_saxpy())
    image = loaded.image()
    program = loaded["saxpy"]
    text_at = program.code_address
    assert image[text_at:text_at + len(program.code)] == program.code
    kd = image[program.descriptor_address:program.descriptor_address + 64]
    assert struct.unpack_from("<q", kd, 16)[0] == program.descriptor.kernel_code_entry_byte_offset
    assert program.descriptor_address + program.descriptor.kernel_code_entry_byte_offset == \
        text_at + program.entry_offset


def _readelf_kernels(path: Path) -> dict[str, dict[str, object]]:
    """Kernel-level scalar keys and arg offsets/sizes from llvm-readelf-16 --notes (YAML text)."""
    text = subprocess.run(["llvm-readelf-16", "--notes", str(path)], capture_output=True, text=True,
                          check=True, timeout=60).stdout
    kernels: list[dict[str, object]] = []
    for line in text.splitlines():
        if line.startswith("  - ."):
            kernels.append({"args": []})
        match = re.match(r"^(\s*)(- )?\.(\w+):\s+(\S.*)?$", line)
        if not match or not kernels:
            continue
        indent = len(match.group(1)) + (2 if match.group(2) else 0)
        key = match.group(3)
        value = (match.group(4) or "").removeprefix("!str ").strip("'")
        if indent == 8 and match.group(2):
            kernels[-1]["args"].append({})  # type: ignore[union-attr]
        if indent == 8:
            kernels[-1]["args"][-1][key] = value  # type: ignore[index]
        elif indent == 4 and key != "args":
            kernels[-1][key] = value
    return {str(k["name"]): k for k in kernels}


@needs_readelf
@pytest.mark.parametrize("path", PREBUILT, ids=lambda p: p.name)
def test_metadata_matches_llvm_readelf(path):
    expected = _readelf_kernels(path)
    loaded = codeobject.load_file(str(path))
    assert sorted(expected) == sorted(loaded.programs)
    for name, program in loaded.programs.items():
        want = expected[name]
        meta = program.metadata
        assert meta.kernarg_segment_size == int(want["kernarg_segment_size"])
        assert meta.kernarg_segment_align == int(want["kernarg_segment_align"])
        assert meta.group_segment_fixed_size == int(want["group_segment_fixed_size"])
        assert meta.private_segment_fixed_size == int(want["private_segment_fixed_size"])
        assert meta.wavefront_size == int(want["wavefront_size"])
        assert meta.sgpr_count == int(want["sgpr_count"])
        assert meta.vgpr_count == int(want["vgpr_count"])
        assert meta.max_flat_workgroup_size == int(want["max_flat_workgroup_size"])
        assert meta.symbol == want["symbol"]
        got_args = [(a.name, a.offset, a.size, a.value_kind) for a in program.args]
        want_args = [(a.get("name", ""), int(a["offset"]), int(a["size"]), a["value_kind"])
                     for a in want["args"]]  # type: ignore[union-attr]
        assert got_args == want_args


@needs_objdump
@pytest.mark.parametrize("path", PREBUILT, ids=lambda p: p.name)
def test_entry_points_match_llvm_objdump_symbols(path):
    text = subprocess.run(["llvm-objdump-16", "-d", str(path)], capture_output=True, text=True,
                          check=True, timeout=60).stdout
    starts = {m.group(2): int(m.group(1), 16) for m in re.finditer(r"^([0-9a-f]{16}) <(\w+)>:", text, re.M)}
    for name, program in codeobject.load_file(str(path)).programs.items():
        assert starts[name] == program.code_address + program.entry_offset


# clang-16 -S `.amdhsa_*` directive -> (descriptor word, field) it sets
_DIRECTIVES = {
    "user_sgpr_count": ("rsrc2", "USER_SGPR_COUNT"),
    "user_sgpr_dispatch_ptr": ("properties", "ENABLE_SGPR_DISPATCH_PTR"),
    "user_sgpr_queue_ptr": ("properties", "ENABLE_SGPR_QUEUE_PTR"),
    "user_sgpr_kernarg_segment_ptr": ("properties", "ENABLE_SGPR_KERNARG_SEGMENT_PTR"),
    "user_sgpr_dispatch_id": ("properties", "ENABLE_SGPR_DISPATCH_ID"),
    "user_sgpr_private_segment_size": ("properties", "ENABLE_SGPR_PRIVATE_SEGMENT_SIZE"),
    "wavefront_size32": ("properties", "ENABLE_WAVEFRONT_SIZE32"),
    "enable_private_segment": ("rsrc2", "ENABLE_PRIVATE_SEGMENT"),
    "system_sgpr_workgroup_id_x": ("rsrc2", "ENABLE_SGPR_WORKGROUP_ID_X"),
    "system_sgpr_workgroup_id_y": ("rsrc2", "ENABLE_SGPR_WORKGROUP_ID_Y"),
    "system_sgpr_workgroup_id_z": ("rsrc2", "ENABLE_SGPR_WORKGROUP_ID_Z"),
    "system_sgpr_workgroup_info": ("rsrc2", "ENABLE_SGPR_WORKGROUP_INFO"),
    "system_vgpr_workitem_id": ("rsrc2", "ENABLE_VGPR_WORKITEM_ID"),
    "float_round_mode_32": ("rsrc1", "FLOAT_ROUND_MODE_32"),
    "float_round_mode_16_64": ("rsrc1", "FLOAT_ROUND_MODE_16_64"),
    "float_denorm_mode_32": ("rsrc1", "FLOAT_DENORM_MODE_32"),
    "float_denorm_mode_16_64": ("rsrc1", "FLOAT_DENORM_MODE_16_64"),
    "dx10_clamp": ("rsrc1", "ENABLE_DX10_CLAMP"),
    "ieee_mode": ("rsrc1", "ENABLE_IEEE_MODE"),
    "fp16_overflow": ("rsrc1", "FP16_OVFL"),
    "workgroup_processor_mode": ("rsrc1", "WGP_MODE"),
    "memory_ordered": ("rsrc1", "MEM_ORDERED"),
    "forward_progress": ("rsrc1", "FWD_PROGRESS"),
    "shared_vgpr_count": ("rsrc3", "SHARED_VGPR_COUNT"),
    "exception_fp_ieee_invalid_op": ("rsrc2", "ENABLE_EXCEPTION_IEEE_754_FP_INVALID_OPERATION"),
    "exception_fp_denorm_src": ("rsrc2", "ENABLE_EXCEPTION_FP_DENORMAL_SOURCE"),
    "exception_fp_ieee_div_zero": ("rsrc2", "ENABLE_EXCEPTION_IEEE_754_FP_DIVISION_BY_ZERO"),
    "exception_fp_ieee_overflow": ("rsrc2", "ENABLE_EXCEPTION_IEEE_754_FP_OVERFLOW"),
    "exception_fp_ieee_underflow": ("rsrc2", "ENABLE_EXCEPTION_IEEE_754_FP_UNDERFLOW"),
    "exception_fp_ieee_inexact": ("rsrc2", "ENABLE_EXCEPTION_IEEE_754_FP_INEXACT"),
    "exception_int_div_zero": ("rsrc2", "ENABLE_EXCEPTION_INT_DIVIDE_BY_ZERO"),
}
_SIZES = {"group_segment_fixed_size", "private_segment_fixed_size", "kernarg_size"}
# AMDGPUUsage, COMPUTE_PGM_RSRC1 GRANULATED_WORKITEM_VGPR_COUNT: GFX10+ wave32 allocates VGPRs in 8s
_VGPR_GRANULE_WAVE32 = 8


@needs_clang
@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.name)
def test_descriptor_bits_match_clang_directives(source):
    """Every descriptor field the loader decodes equals what clang-16's assembly says it set."""
    argv = ["clang-16", *compiler.COMPILE_FLAGS, "-include", str(compiler.PRELUDE), "-S", str(source),
            "-o", "-"]
    asm = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=120).stdout
    loaded = codeobject.load_file(str(compiler.PREBUILT_DIR / f"{source.stem}.co"))
    blocks = re.findall(r"\.amdhsa_kernel (\w+)\n(.*?)\.end_amdhsa_kernel", asm, re.S)
    assert sorted(name for name, _ in blocks) == sorted(loaded.programs)
    for name, body in blocks:
        descriptor = loaded[name].descriptor
        words = {"rsrc1": descriptor.rsrc1, "rsrc2": descriptor.rsrc2, "rsrc3": descriptor.rsrc3,
                 "properties": descriptor.properties}
        directives = dict(re.findall(r"\.amdhsa_(\w+) (\d+)", body))
        for directive, (word, field_name) in _DIRECTIVES.items():
            if directive in directives:
                assert words[word][field_name] == int(directives[directive]), (name, directive)
        for size in _SIZES:
            assert getattr(descriptor, size) == int(directives[size]), (name, size)
        granules = -(-max(int(directives["next_free_vgpr"]), 1) // _VGPR_GRANULE_WAVE32) - 1
        assert descriptor.rsrc1["GRANULATED_WORKITEM_VGPR_COUNT"] == granules


# --- malformed inputs ---

def _raises(data: bytes, *fragments: str) -> str:
    with pytest.raises(BadBinary) as info:
        codeobject.load(data)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    return message


@pytest.mark.parametrize("length", [0, 10, 63, 64, 200, 1000])
def test_truncated_elf(length):
    _raises(_saxpy()[:length])


def test_truncation_before_the_section_table_is_named():
    data = _saxpy()
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    _raises(data[:shoff + 10], "section header table")


def test_bad_magic():
    _raises(b"\x7fELG" + _saxpy()[4:], "magic")


def test_wrong_machine():
    _raises(_patch(_saxpy(), 0x12, "<H", 62), "e_machine", "EM_AMDGPU")


def test_wrong_mach_in_e_flags():
    data = _saxpy()
    flags = struct.unpack_from("<I", data, 0x30)[0]
    _raises(_patch(data, 0x30, "<I", (flags & ~0xFF) | 0x30), "mach 0x30")  # a gfx9 mach (gfx908)


def test_xnack_and_sramecc_modes_decode():
    data = _saxpy()
    flags = struct.unpack_from("<I", data, 0x30)[0]
    # EF_AMDGPU_FEATURE_XNACK_ON_V4 | EF_AMDGPU_FEATURE_SRAMECC_OFF_V4; metadata target is unchanged
    loaded = codeobject.load(_patch(data, 0x30, "<I", flags | 0x300 | 0x800))
    assert (loaded.xnack, loaded.sramecc) == ("on", "off")


def test_old_code_object_version():
    _raises(_patch(_saxpy(), 8, "<B", 1), "EI_ABIVERSION")


def test_descriptor_out_of_range():
    data = _saxpy()
    entry = _kd_symbol_entry(data, "saxpy.kd")
    rodata = _section(data, ".rodata")
    # st_value just past .rodata's end, still 64-byte aligned
    moved = _patch(data, entry + 8, "<Q", rodata.address + rodata.size)
    _raises(moved, "saxpy.kd", "out of range", ".rodata")


def test_descriptor_entry_outside_text():
    data = _saxpy()
    _raises(_patch(data, _kd_file_offset(data, "saxpy") + 16, "<q", -64), "kernel_code_entry_byte_offset",
            ".text")


def test_descriptor_reserved_bits():
    data = _saxpy()
    at = _kd_file_offset(data, "saxpy")
    properties = struct.unpack_from("<H", data, at + 56)[0]
    _raises(_patch(data, at + 56, "<H", properties | 1 << 7), "kernel_code_properties", "RESERVED0")
    _raises(_patch(data, at + 12, "<I", 1), "reserved0")


def test_user_sgpr_count_below_enabled_sgprs():
    data = _saxpy()
    at = _kd_file_offset(data, "saxpy")
    rsrc2 = struct.unpack_from("<I", data, at + 52)[0]
    # USER_SGPR_COUNT = 3 while dispatch ptr + kernarg ptr need 4
    _raises(_patch(data, at + 52, "<I", (rsrc2 & ~(0x1F << 1)) | 3 << 1), "USER_SGPR_COUNT is 3", "4 user")


def test_descriptor_and_metadata_disagree():
    data = _saxpy()
    _raises(_patch(data, _kd_file_offset(data, "saxpy") + 8, "<I", 32), "kernarg_size is 32", "28")


def test_corrupt_msgpack():
    data = _saxpy()
    _raises(_patch(data, _note_desc_offset(data), "<B", 0xC1), "NT_AMDGPU_METADATA", "0xc1", "offset 0")


def test_note_size_overflow():
    data = _saxpy()
    note = _section(data, ".note")
    _raises(_patch(data, note.offset + 4, "<I", 0xFFFFFF00), "n_descsz", "overflow")


def test_missing_metadata_note():
    data = _saxpy()
    note = _section(data, ".note")
    _raises(_patch(data, note.offset + 8, "<I", 31), "no NT_AMDGPU_METADATA")


def test_missing_kernel_descriptor_symbol():
    data = _saxpy()
    symtab_name = _kd_symbol_entry(data, "saxpy.kd")
    name_at = struct.unpack_from("<I", data, symtab_name)[0]
    strtab = next(s for s in codeobject.load(data).sections if s.name == ".strtab")
    # rename saxpy.kd to saxpy.kx in .strtab
    _raises(_patch(data, strtab.offset + name_at + len("saxpy.k"), "<B", ord("x")), "saxpy.kd",
            "no such symbol")


# --- msgpack ---

def test_msgpack_values():
    blob = bytes([0x83, 0xA1, 0x61, 0x93, 0x01, 0xFF, 0xCD, 0x01, 0x00, 0xA1, 0x62, 0xC3, 0xA1, 0x63,
                  0xCB]) + struct.pack(">d", 1.5)
    assert msgpack.unpack(blob) == {"a": [1, -1, 256], "b": True, "c": 1.5}


@pytest.mark.parametrize("blob, fragment", [
    (bytes([0xDD, 0xFF, 0xFF, 0xFF, 0xFF]), "array of 4294967295"),
    (bytes([0xDF, 0xFF, 0xFF, 0xFF, 0xFF]), "map of 4294967295"),
    (bytes([0xDB, 0x00, 0x01, 0x00, 0x00, 0x41]), "needs 65536 bytes"),
    (bytes([0x91] * 40 + [0x00]), "nesting"),
    (bytes([0xA1, 0xFF]), "UTF-8"),
    (bytes([0xD4, 0x01, 0x00]), "extension"),
    (bytes([0x81, 0x90, 0x00]), "map key"),
    (bytes([0x01, 0x02]), "stray"),
])
def test_msgpack_rejects(blob, fragment):
    with pytest.raises(BadBinary, match=fragment):
        msgpack.unpack(blob)


# --- fuzzing: only BadBinary, bounded time ---

_CORPUS = [p.read_bytes() for p in PREBUILT]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzz_mutated_code_objects_only_raise_bad_binary(data):
    blob = bytearray(data.draw(st.sampled_from(_CORPUS)))
    for _ in range(data.draw(st.integers(1, 8))):
        at = data.draw(st.integers(0, len(blob) - 1))
        width = data.draw(st.sampled_from([1, 2, 4, 8]))
        value = data.draw(st.integers(0, (1 << (8 * width)) - 1))
        blob[at:at + width] = value.to_bytes(width, "little")[:len(blob) - at]
    cut = data.draw(st.one_of(st.none(), st.integers(0, len(blob))))
    if cut is not None:
        del blob[cut:]
    started = time.monotonic()
    try:
        codeobject.load(bytes(blob))
    except BadBinary:
        pass
    assert time.monotonic() - started < 1.0


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_fuzz_msgpack_only_raises_bad_binary(blob):
    try:
        msgpack.unpack(blob)
    except BadBinary:
        pass


# --- compiler wrapper and build script ---

def test_missing_compiler_names_the_package(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(BackendUnavailable, match="apt-get install clang-16"):
        compiler.find_toolchain()


def test_cache_key_covers_source_flags_and_version():
    base = compiler.cache_key("a", ("-O3",), "v1")
    assert base != compiler.cache_key("b", ("-O3",), "v1")
    assert base != compiler.cache_key("a", ("-O2",), "v1")
    assert base != compiler.cache_key("a", ("-O3",), "v2")
    assert base == compiler.cache_key("a", ("-O3",), "v1")


@needs_clang
def test_compile_uses_the_content_addressed_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUHAL_CACHE", str(tmp_path))
    source = (compiler.KERNELS_DIR / "saxpy.cl").read_text()
    blob = compiler.compile_source(source)
    entries = list((tmp_path / "kernels").glob("*.co"))
    assert len(entries) == 1 and entries[0].read_bytes() == blob
    entries[0].write_bytes(b"cached")
    assert compiler.compile_source(source) == b"cached"
    assert compiler.compile_source(source, use_cache=False) == blob


@needs_clang
def test_compile_error_carries_diagnostics(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUHAL_CACHE", str(tmp_path))
    with pytest.raises(compiler.CompileError, match="undeclared"):
        compiler.compile_source("__kernel void k(__global int *p) { p[0] = missing; }")


@needs_clang
def test_build_script_reproduces_the_committed_objects():
    objects, manifest = build_kernels.build_all()
    assert build_kernels.differences(objects, manifest) == []
    again, _ = build_kernels.build_all()
    assert again == objects
