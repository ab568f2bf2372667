"""Tests of the fatbinary and cubin parsers on the committed kernel library, the compiler wrapper
and the build script.

Entry points and parameter layouts must match the CUDA sources' signatures; section sizes and
symbols are cross-checked against readelf (and cuobjdump's EIATTR dump when the toolkit has it);
malformed and mutated inputs must raise BadBinary and nothing else; a fresh build must reproduce
the committed fatbinaries byte for byte (skipped without nvcc).
"""
from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compute.nv import build_kernels, compiler
from drivers.nv import cubin, fatbin
from hal.errors import BackendUnavailable, BadBinary

PREBUILT = sorted(compiler.PREBUILT_DIR.glob("*.fatbin"))
SOURCES = sorted(compiler.KERNELS_DIR.glob("*.cu"))
NVCC_MISSING = "nvcc absent (install the CUDA toolkit)"
needs_nvcc = pytest.mark.skipif(compiler.find_nvcc() is None, reason=NVCC_MISSING)
needs_readelf = pytest.mark.skipif(shutil.which("readelf") is None, reason="readelf absent (binutils)")
CUOBJDUMP = shutil.which("cuobjdump") or (shutil.which("cuobjdump", path="/usr/local/cuda/bin"))
# C parameter types of the library and their sizes in the parameter block (LP64).
_C_SIZES = {"float": 4, "int": 4, "unsigned int": 4}
# Static __shared__ bytes each library kernel declares.
_SHARED = {"reduce_sum_f32": 1024, "reduce_sum_i32": 1024, "matmul_f32": 2048, "histogram_u32": 256}
# sm_90 cubins add 1 KiB of reserved shared memory per CTA to each kernel that uses shared memory.
_RESERVED_SHARED_SM90 = 1024


def _signatures(source: Path) -> dict[str, list[int]]:
    """{kernel: [parameter sizes]} from the `extern "C" __global__` definitions of a source."""
    out = {}
    for header, params in re.findall(r"__global__(.*?)\(([^()]*)\)\s*\{",
                                     re.sub(r"__launch_bounds__\([^)]*\)", "", source.read_text()),
                                     re.DOTALL):
        name = header.split()[-1]
        sizes = []
        for param in params.split(","):
            words = param.replace("const", " ").split()
            if "*" in param:
                sizes.append(8)
            else:
                sizes.append(_C_SIZES[" ".join(words[:-1])])
        out[name] = sizes
    return out


def _layout(sizes: list[int]) -> list[tuple[int, int]]:
    offset = 0
    layout = []
    for size in sizes:
        offset = (offset + size - 1) // size * size
        layout.append((offset, size))
        offset += size
    return layout


def _reduce() -> bytes:
    return (compiler.PREBUILT_DIR / "reduce.fatbin").read_bytes()


def test_library_is_committed_for_every_source() -> None:
    assert [p.stem for p in PREBUILT] == [s.stem for s in SOURCES]


def test_fatbinary_entries() -> None:
    for path in PREBUILT:
        binary = fatbin.load_file(path)
        assert binary.sass_archs == [80, 89, 90], path.name
        assert binary.ptx_archs == [80, 90], path.name
        assert ".target sm_80" in binary.ptx(89)
        assert ".target sm_90" in binary.ptx(90)
        assert ".target sm_80" in binary.ptx(80)
        with pytest.raises(BadBinary, match="no cubin for sm_75"):
            binary.cubin(75)
        with pytest.raises(BadBinary, match="no PTX usable on sm_75"):
            binary.ptx(75)


def test_entry_points_and_parameters_match_sources() -> None:
    for source in SOURCES:
        signatures = _signatures(source)
        binary = fatbin.load_file(compiler.PREBUILT_DIR / f"{source.stem}.fatbin")
        for arch in binary.sass_archs:
            image = cubin.parse(binary.cubin(arch))
            assert image.arch == arch
            assert sorted(image.kernels) == sorted(signatures), (source.name, arch)
            for name, sizes in signatures.items():
                kernel = image[name]
                layout = _layout(sizes)
                assert [(p.offset, p.size) for p in kernel.params] == layout, (name, arch)
                assert [p.ordinal for p in kernel.params] == list(range(len(sizes)))
                assert kernel.param_size == layout[-1][0] + layout[-1][1]
                assert kernel.constant0_size == kernel.param_bank_offset + kernel.param_size
                assert 1 <= kernel.registers <= 255
                assert len(kernel.code) > 0 and len(kernel.code) % 16 == 0
                declared = _SHARED.get(name, 0)
                reserved = _RESERVED_SHARED_SM90 if arch == 90 and declared else 0
                assert kernel.shared_size == declared + reserved, (name, arch)
                if name in ("reduce_sum_f32", "reduce_sum_i32", "matmul_f32"):
                    assert kernel.max_threads == (256, 1, 1)
                else:
                    assert kernel.max_threads is None
                if name == "private_array":
                    assert kernel.frame_size >= 256
            with pytest.raises(BadBinary, match="no kernel 'nope'"):
                image["nope"]


def _readelf(path: Path, *flags: str) -> str:
    return subprocess.run(["readelf", "-W", *flags, str(path)], capture_output=True, text=True,
                          timeout=60, check=True).stdout


@needs_readelf
def test_cubins_agree_with_readelf(tmp_path: Path) -> None:
    for path in PREBUILT:
        binary = fatbin.load_file(path)
        for arch in binary.sass_archs:
            image_path = tmp_path / f"{path.stem}.sm_{arch}.cubin"
            image_path.write_bytes(binary.cubin(arch))
            image = cubin.load_file(image_path)
            sections = _readelf(image_path, "-S")
            sizes = dict(re.findall(r"\]\s+(\S+)\s+\S+\s+[0-9a-f]+\s+[0-9a-f]+\s+([0-9a-f]+)", sections))
            symbols = _readelf(image_path, "-s")
            functions = set(re.findall(r"FUNC\s+GLOBAL\s+\S+(?:\s+\[[^\]]*\])?\s+\d+\s+(\w+)", symbols))
            assert functions == set(image.kernels)
            for name, kernel in image.kernels.items():
                assert int(sizes.get(f".nv.shared.{name}", "0"), 16) == kernel.shared_size
                assert int(sizes[f".nv.constant0.{name}"], 16) == kernel.constant0_size
                assert int(sizes[f".text.{name}"], 16) == len(kernel.code)
            flags = re.search(r"Flags:\s+0x([0-9a-f]+)", _readelf(image_path, "-h"))
            assert flags is not None and int(flags.group(1), 16) == image.flags


@pytest.mark.skipif(CUOBJDUMP is None, reason="cuobjdump absent (not in this CUDA installation)")
def test_cubins_agree_with_cuobjdump(tmp_path: Path) -> None:
    for path in PREBUILT:
        binary = fatbin.load_file(path)
        image_path = tmp_path / f"{path.stem}.cubin"
        image_path.write_bytes(binary.cubin(90))
        image = cubin.load_file(image_path)
        dump = subprocess.run([str(CUOBJDUMP), "-elf", str(image_path)], capture_output=True,
                              text=True, timeout=60, check=True).stdout
        for name, kernel in image.kernels.items():
            size = re.search(rf"\.nv\.info\.{name}\n.*?EIATTR_CBANK_PARAM_SIZE\s+Format:\s+\S+\s+"
                             rf"Value:\s+(0x[0-9a-f]+)", dump, re.DOTALL)
            assert size is not None and int(size.group(1), 16) == kernel.param_size


def _patched(data: bytes, offset: int, fmt: str, *values: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, *values)
    return bytes(out)


def test_malformed_fatbinaries_name_the_offset() -> None:
    data = _reduce()
    cases = [
        (data[:8], "shorter than its 16-byte header"),
        (_patched(data, 0, "<I", 0x12345678), "magic 0x12345678 at offset 0x0"),
        (_patched(data, 4, "<H", 2), "version 2 at offset 0x4"),
        (_patched(data, 8, "<Q", len(data)), "run past the end"),
        (_patched(data, 16, "<H", 7), "entry at offset 0x10: kind 7"),
        (_patched(data, 16 + 8, "<Q", 1 << 40), "entry at offset 0x10: payload of"),
        (_patched(data, 16 + 4, "<I", 12), "entry at offset 0x10: header size 12"),
        (_patched(data, 16 + 40, "<Q", 0x11 | fatbin.FLAG_COMPRESSED), "compressed entry"),
        (_patched(data, 16 + 40, "<Q", 0x10), "32-bit image"),
        (_patched(data, 16 + 28, "<I", 0), "architecture 0"),
        (_patched(data, 16 + 64, "<I", 0), "is not ELF"),
        (data[:16] + bytes(8), "entry header at offset 0x10 runs past"),
    ]
    for blob, message in cases:
        if message == "run past the end":
            with pytest.raises(BadBinary, match=message):
                fatbin.parse(blob)
            continue
        if message == "entry header at offset 0x10 runs past":
            blob = _patched(blob, 8, "<Q", 8)
        with pytest.raises(BadBinary, match=re.escape(message)):
            fatbin.parse(blob)


def test_ptx_entry_must_be_text() -> None:
    binary = fatbin.parse(_reduce())
    ptx = next(entry for entry in binary.entries if entry.kind == "ptx")
    data = bytearray(_reduce())
    data[ptx.offset + 80 + 3] = 0xFF
    broken = fatbin.parse(bytes(data))
    with pytest.raises(BadBinary, match="PTX is not ASCII"):
        broken.ptx(80)


def test_malformed_cubins_name_what_is_wrong() -> None:
    image = fatbin.parse(_reduce()).cubin(90)
    shoff = struct.unpack_from("<Q", image, 0x28)[0]
    cases = [
        (image[:40], "shorter than an ELF64 header"),
        (b"\x7fELX" + image[4:], "no ELF magic"),
        (_patched(image, 0x12, "<H", 62), "e_machine 62"),
        (_patched(image, 7, "<B", 0), "OS ABI 0x0"),
        (_patched(image, 0x3A, "<H", 40), "section header size 40"),
        (_patched(image, 0x3C, "<H", 0xFFFF), "do not fit"),
        (_patched(image, 0x3E, "<H", 500), "name table index 500"),
        (_patched(image, shoff + 64 * 3 + 0x20, "<Q", 1 << 40), "past the end of the file"),
    ]
    for blob, message in cases:
        with pytest.raises(BadBinary, match=re.escape(message)):
            cubin.parse(blob)


def test_malformed_nv_info_records() -> None:
    with pytest.raises(BadBinary, match="unknown format 9"):
        cubin.parse_info(bytes([9, 0x17, 0, 0]), 0, 4, ".nv.info.k")
    with pytest.raises(BadBinary, match="64-byte value running past"):
        cubin.parse_info(bytes([4, 0x17, 64, 0]) + bytes(8), 0, 12, ".nv.info.k")
    with pytest.raises(BadBinary, match="cut short"):
        cubin.parse_info(bytes([3, 0x19]), 0, 2, ".nv.info.k")
    records = cubin.parse_info(bytes([3, 0x19, 0x14, 0, 1, 0x35, 0, 0]), 0, 8, ".nv.info.k")
    assert [(r.attribute, r.half) for r in records] == [(cubin.EIATTR_CBANK_PARAM_SIZE, 0x14), (0x35, 0)]


def _parse_all(blob: bytes) -> None:
    try:
        binary = fatbin.parse(blob)
    except BadBinary:
        return
    for entry in binary.entries:
        try:
            if entry.kind == "elf":
                cubin.parse(entry.payload)
            else:
                _ = entry.text
        except BadBinary:
            pass


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_fatbinaries_raise_only_bad_binary(data: st.DataObject) -> None:
    blob = bytearray(_reduce())
    for _ in range(data.draw(st.integers(1, 6))):
        # Bias the flips toward the headers, where a mutation changes the structure.
        region = data.draw(st.sampled_from([96, 4096, len(blob)]))
        position = data.draw(st.integers(0, region - 1))
        blob[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.one_of(st.none(), st.integers(0, len(blob))))
    _parse_all(bytes(blob if cut is None else blob[:cut]))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_cubins_raise_only_bad_binary(data: st.DataObject) -> None:
    image = bytearray(fatbin.parse(_reduce()).cubin(80))
    shoff = struct.unpack_from("<Q", image, 0x28)[0]
    for _ in range(data.draw(st.integers(1, 6))):
        target = data.draw(st.sampled_from(["header", "sections", "info", "anywhere"]))
        if target == "header":
            position = data.draw(st.integers(0, 63))
        elif target == "sections":
            position = data.draw(st.integers(shoff, len(image) - 1))
        elif target == "info":
            position = data.draw(st.integers(0x700, 0x9FF))
        else:
            position = data.draw(st.integers(0, len(image) - 1))
        image[position] = data.draw(st.integers(0, 255))
    try:
        cubin.parse(bytes(image))
    except BadBinary:
        pass


def test_missing_nvcc_is_backend_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(compiler, "NVCC_FALLBACKS", ())
    with pytest.raises(BackendUnavailable, match="prebuilt fatbinaries"):
        compiler.find_toolchain()


def test_cache_key_covers_source_flags_and_version() -> None:
    base = compiler.cache_key("a", ("-O3",), "v1")
    assert base != compiler.cache_key("b", ("-O3",), "v1")
    assert base != compiler.cache_key("a", ("-O2",), "v1")
    assert base != compiler.cache_key("a", ("-O3",), "v2")


@needs_nvcc
def test_compile_uses_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUHAL_CACHE", str(tmp_path))
    source = (compiler.KERNELS_DIR / "saxpy.cu").read_text()
    blob = compiler.compile_source(source)
    cached = list((tmp_path / "kernels").glob("*.fatbin"))
    assert len(cached) == 1 and cached[0].read_bytes() == blob
    cached[0].write_bytes(b"marker")
    assert compiler.compile_source(source) == b"marker"
    with pytest.raises(compiler.CompileError, match="error"):
        compiler.compile_source("this is not CUDA", use_cache=False)


@needs_nvcc
def test_rebuild_reproduces_the_committed_library() -> None:
    objects, manifest = build_kernels.build_all()
    assert build_kernels.differences(objects, manifest) == []
