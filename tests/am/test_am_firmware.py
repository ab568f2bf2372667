"""drivers.am.firmware and mockgpu.amd.firmware_images: selection, search path, decompression,
header parsing and validation (real files when cached, synthetic ones always), fuzzing."""
from __future__ import annotations

import importlib.util
import lzma
import pathlib
import shutil
import subprocess
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autogen.amd import amdgpu_ucode as ucode
from drivers.am import firmware as fw
from hal.errors import FirmwareError
from mockgpu.amd import firmware_images as images

NAVI31 = fw.NAVI31_IP_VERSIONS
SPECS = {spec.name: spec for spec in fw.firmware_for(NAVI31)}
# the pinned package has no gc_11_0_0_mes_2.bin; amdgpu falls back to gc_11_0_0_mes.bin
SPEC_OF = {**SPECS, "amdgpu/gc_11_0_0_mes.bin": SPECS["amdgpu/gc_11_0_0_mes_2.bin"]}
PACKAGE_ROOT = fw.sources.unpacked_dir(fw.FIRMWARE_PACKAGE) / fw.PACKAGE_FIRMWARE_ROOT
REAL_ROOTS = [PACKAGE_ROOT, *(pathlib.Path(item) for item in fw.SYSTEM_FIRMWARE_DIRS)]


def real_root() -> pathlib.Path:
    for root in REAL_ROOTS:
        if all((root / name).is_file() for name in images.NAVI31_LAYOUTS):
            return root
    pytest.skip(f"the real Navi31 firmware files are not cached or installed; fetch them with: "
                f"{fw.FETCH_COMMAND}")


def parse(name: str, data) -> fw.FirmwareImage:
    spec = SPEC_OF[name]
    return fw.parse_firmware(name, data, spec.kind, engine=spec.engine,
                             expected_ip_major=spec.ip_version[0])


@pytest.fixture(scope="module")
def synthetic() -> dict[str, bytes]:
    return images.build_navi31_set(seed=7)


# ------------------------------------------------------------------------------------- selection


def test_navi31_selection_follows_amdgpu_names():
    names = [spec.name for spec in fw.firmware_for(NAVI31, pci_device=0x744C, pci_revision=0xC8)]
    assert names == ["amdgpu/gc_11_0_0_pfp.bin", "amdgpu/gc_11_0_0_me.bin", "amdgpu/gc_11_0_0_rlc.bin",
                     "amdgpu/gc_11_0_0_mec.bin", "amdgpu/gc_11_0_0_imu.bin", "amdgpu/gc_11_0_0_mes_2.bin",
                     "amdgpu/gc_11_0_0_mes1.bin", "amdgpu/psp_13_0_0_sos.bin", "amdgpu/psp_13_0_0_ta.bin",
                     "amdgpu/smu_13_0_0.bin", "amdgpu/sdma_6_0_0.bin"]
    assert SPECS["amdgpu/gc_11_0_0_mes_2.bin"].alternatives == ("amdgpu/gc_11_0_0_mes.bin",)


def test_kicker_and_rlc_1_variants():
    kicker = [spec.name for spec in fw.firmware_for(NAVI31, pci_device=0x744B, pci_revision=0x00)]
    assert "amdgpu/gc_11_0_0_rlc_kicker.bin" in kicker
    assert "amdgpu/psp_13_0_0_sos_kicker.bin" in kicker
    assert "amdgpu/smu_13_0_0_kicker.bin" in kicker
    rlc_1 = [spec.name for spec in fw.firmware_for(NAVI31, pci_device=0x744C, pci_revision=0xCE)]
    assert "amdgpu/gc_11_0_0_rlc_1.bin" in rlc_1


def test_unknown_ip_version_is_refused():
    with pytest.raises(FirmwareError, match="GC 12.0.0.*GC 11.x"):
        fw.firmware_for({"GC": (12, 0, 0)})


# ---------------------------------------------------------------------------------- real files


def test_real_files_parse_with_expected_sections():
    root = real_root()
    loaded = fw.load_set(NAVI31, roots=[root])
    assert set(loaded) == set(SPECS)
    mec = loaded["amdgpu/gc_11_0_0_mec.bin"]
    assert mec.header_version == (2, 0)
    assert [s.ucode_id for s in mec.sections] == [
        ucode.AMDGPU_UCODE_ID_CP_RS64_MEC, ucode.AMDGPU_UCODE_ID_CP_RS64_MEC_P0_STACK,
        ucode.AMDGPU_UCODE_ID_CP_RS64_MEC_P1_STACK, ucode.AMDGPU_UCODE_ID_CP_RS64_MEC_P2_STACK,
        ucode.AMDGPU_UCODE_ID_CP_RS64_MEC_P3_STACK]
    sos = loaded["amdgpu/psp_13_0_0_sos.bin"]
    assert {b.name for b in sos.binaries} == {"SYS_DRV", "SOS", "TOC", "KDB", "SPL", "RL"}
    rlc = loaded["amdgpu/gc_11_0_0_rlc.bin"]
    assert rlc.section(ucode.AMDGPU_UCODE_ID_RLC_P).size > 0
    assert loaded["amdgpu/gc_11_0_0_mes_2.bin"].name == "amdgpu/gc_11_0_0_mes.bin"
    # the crc32 is the CRC-32 of the bytes after the common header, except in two files
    odd_crc = {"amdgpu/gc_11_0_0_rlc.bin", "amdgpu/smu_13_0_0.bin"}
    for name, image in loaded.items():
        assert len(image.sha256) == 64
        assert image.crc32_matches == (name not in odd_crc), name


def test_synthetic_headers_match_the_real_files(synthetic):
    root = real_root()
    for name, data in synthetic.items():
        real = (root / name).read_bytes()
        assert len(data) == len(real), name
        crc = slice(ucode.common_firmware_header.offset_of("crc32"), fw.COMMON_HEADER_SIZE)
        assert data[:crc.start] == real[:crc.start], name
        assert data[crc.stop:images.HEADER_AREA_BYTES] == real[crc.stop:images.HEADER_AREA_BYTES], name
        mine, theirs = parse(name, data), parse(name, real)
        assert [(s.ucode_id, s.offset, s.size) for s in mine.sections] == \
               [(s.ucode_id, s.offset, s.size) for s in theirs.sections], name
        assert [(b.fw_type, b.version, b.offset, b.size) for b in mine.binaries] == \
               [(b.fw_type, b.version, b.offset, b.size) for b in theirs.binaries], name


# -------------------------------------------------------------------------- synthetic images


def test_synthetic_set_loads_from_the_env_directory(tmp_path, monkeypatch):
    images.write_navi31_set(tmp_path)
    monkeypatch.setenv(fw.FIRMWARE_DIR_ENV, str(tmp_path))
    assert fw.search_path()[0] == tmp_path
    loaded = fw.load_set(NAVI31)
    assert len(loaded) == len(SPECS)
    for image in loaded.values():
        assert image.path.startswith(str(tmp_path))
        assert image.crc32_matches
        for section in image.sections:
            # zero copy: every payload is a slice of the file's own buffer
            assert section.payload.obj is image.data.obj
            assert bytes(section.payload) == bytes(image.data[section.offset:section.offset + section.size])
    sdma = loaded["amdgpu/sdma_6_0_0.bin"]
    assert [s.ucode_id for s in sdma.sections] == [ucode.AMDGPU_UCODE_ID_SDMA_UCODE_TH0,
                                                   ucode.AMDGPU_UCODE_ID_SDMA_UCODE_TH1]
    smu = loaded["amdgpu/smu_13_0_0.bin"]
    assert len(smu.binaries) == 6 and smu.binaries[0].name == "PPTABLE_3664"


def test_missing_required_file_names_it_and_the_fetch_command(tmp_path):
    with pytest.raises(FirmwareError, match=r"gc_11_0_0_pfp\.bin: not found.*--fetch"):
        fw.load(SPECS["amdgpu/gc_11_0_0_pfp.bin"], roots=[tmp_path])
    assert fw.load(SPECS["amdgpu/gc_11_0_0_mes1.bin"], roots=[tmp_path]) is None


def test_xz_compressed_file_is_read(tmp_path, synthetic):
    name = "amdgpu/sdma_6_0_0.bin"
    path = tmp_path / (name + ".xz")
    path.parent.mkdir(parents=True)
    path.write_bytes(lzma.compress(synthetic[name]))
    image = fw.load(SPECS[name], roots=[tmp_path])
    assert image.path.endswith(".xz")
    assert image.sha256 == fw.hashlib.sha256(synthetic[name]).hexdigest()
    path.write_bytes(lzma.compress(synthetic[name])[:-20])
    with pytest.raises(FirmwareError, match="xz"):
        fw.load(SPECS[name], roots=[tmp_path])


def test_zstd_compressed_file_is_read_or_refused_clearly(tmp_path, synthetic, monkeypatch):
    name = "amdgpu/sdma_6_0_0.bin"
    path = tmp_path / (name + ".zst")
    path.parent.mkdir(parents=True)
    if shutil.which("zstd") is None:
        pytest.skip("the zstd program is not installed to make a .zst file")
    packed = subprocess.run(["zstd", "-q", "-c"], input=synthetic[name], capture_output=True,
                            check=True, timeout=60).stdout
    path.write_bytes(packed)
    assert bytes(fw.load(SPECS[name], roots=[tmp_path]).data) == synthetic[name]
    # with no decoder at all the error says what to install
    has_module = any(importlib.util.find_spec(m) for m in ("zstandard",))
    if not has_module:
        monkeypatch.setattr(fw.shutil, "which", lambda program: None)
        with pytest.raises(FirmwareError, match="cannot read .zst firmware.*zstandard"):
            fw.load(SPECS[name], roots=[tmp_path])


# ------------------------------------------------------------------------ corrupt and truncated


@pytest.mark.parametrize("name", sorted(images.NAVI31_LAYOUTS))
def test_truncated_file_names_size_bytes(name, synthetic):
    data = synthetic[name]
    for cut in (len(data) - 1, 200, 31):
        with pytest.raises(FirmwareError, match=rf"{name}: size_bytes"):
            parse(name, data[:cut])


def _mutate(data: bytes, cls: type, path: str, value: int) -> bytearray:
    """Set one (dotted) member of the versioned header `cls` at the start of `data`."""
    buffer = bytearray(data)
    struct = cls.from_buffer(buffer)
    *owners, member = path.split(".")
    for owner in owners:
        struct = getattr(struct, owner)
    setattr(struct, member, value)
    return buffer


HUGE = 0xFFFFFF00
CORRUPTIONS = [
    # (file, struct, member path, value, field named in the error)
    ("amdgpu/gc_11_0_0_pfp.bin", ucode.common_firmware_header, "header_size_bytes", 8, "header_size_bytes"),
    ("amdgpu/gc_11_0_0_pfp.bin", ucode.common_firmware_header, "header_version_major", 7,
     "header_version_major"),
    ("amdgpu/gc_11_0_0_pfp.bin", ucode.common_firmware_header, "ip_version_major", 12, "ip_version_major"),
    ("amdgpu/gc_11_0_0_pfp.bin", ucode.common_firmware_header, "ucode_array_offset_bytes", HUGE,
     "ucode_array_offset_bytes"),
    ("amdgpu/gc_11_0_0_pfp.bin", ucode.common_firmware_header, "ucode_size_bytes", HUGE,
     "ucode_array_offset_bytes"),
    ("amdgpu/gc_11_0_0_me.bin", ucode.gfx_firmware_header_v2_0, "ucode_size_bytes", HUGE,
     "ucode_size_bytes"),
    ("amdgpu/gc_11_0_0_me.bin", ucode.gfx_firmware_header_v2_0, "ucode_offset_bytes", HUGE,
     "ucode_offset_bytes"),
    ("amdgpu/gc_11_0_0_mec.bin", ucode.gfx_firmware_header_v2_0, "data_offset_bytes", HUGE,
     "data_offset_bytes"),
    ("amdgpu/gc_11_0_0_mec.bin", ucode.gfx_firmware_header_v2_0, "data_size_bytes", HUGE,
     "data_offset_bytes"),
    ("amdgpu/gc_11_0_0_rlc.bin", ucode.rlc_firmware_header_v2_3, "v2_2.rlc_iram_ucode_offset_bytes", HUGE,
     "rlc_iram_ucode_offset_bytes"),
    ("amdgpu/gc_11_0_0_rlc.bin", ucode.rlc_firmware_header_v2_3, "rlcv_ucode_offset_bytes", HUGE,
     "rlcv_ucode_offset_bytes"),
    ("amdgpu/gc_11_0_0_rlc.bin", ucode.rlc_firmware_header_v2_3,
     "v2_2.v2_1.save_restore_list_srm_offset_bytes", HUGE, "save_restore_list_srm_offset_bytes"),
    ("amdgpu/gc_11_0_0_rlc.bin", ucode.rlc_firmware_header_v2_3,
     "v2_2.v2_1.v2_0.reg_list_array_offset_bytes", HUGE, "reg_list_array_offset_bytes"),
    ("amdgpu/gc_11_0_0_rlc.bin", ucode.common_firmware_header, "header_size_bytes", 104,
     "header_size_bytes"),
    ("amdgpu/gc_11_0_0_imu.bin", ucode.imu_firmware_header_v1_0, "imu_dram_ucode_size_bytes", HUGE,
     "imu_dram_ucode_size_bytes"),
    ("amdgpu/gc_11_0_0_mes1.bin", ucode.mes_firmware_header_v1_0, "mes_ucode_data_offset_bytes", HUGE,
     "mes_ucode_data_offset_bytes"),
    ("amdgpu/sdma_6_0_0.bin", ucode.sdma_firmware_header_v2_0, "ctl_ucode_offset", HUGE, "ctl_ucode_offset"),
    ("amdgpu/sdma_6_0_0.bin", ucode.sdma_firmware_header_v2_0, "ctx_jt_offset", 5000, "ctx_jt_offset"),
    ("amdgpu/smu_13_0_0.bin", ucode.smc_firmware_header_v2_1, "pptable_entry_offset", HUGE,
     "pptable_entry_offset"),
    ("amdgpu/smu_13_0_0.bin", ucode.smc_firmware_header_v2_1, "pptable_count", 100000, "pptable_count"),
    ("amdgpu/psp_13_0_0_sos.bin", ucode.psp_firmware_header_v2_0, "psp_fw_bin_count",
     ucode.UCODE_MAX_PSP_PACKAGING, "psp_fw_bin_count"),
    ("amdgpu/psp_13_0_0_ta.bin", ucode.ta_firmware_header_v2_0, "ta_fw_bin_count",
     ucode.UCODE_MAX_PSP_PACKAGING, "ta_fw_bin_count"),
    # more descriptors than the file has: the first one past the real ones reads payload bytes
    ("amdgpu/psp_13_0_0_ta.bin", ucode.ta_firmware_header_v2_0, "ta_fw_bin_count", 25,
     r"fw_bin\[\d+\]\.offset_bytes"),
]


@pytest.mark.parametrize("name,cls,member,value,field", CORRUPTIONS,
                         ids=[f"{c[0].split('/')[1]}:{c[2]}" for c in CORRUPTIONS])
def test_header_field_out_of_range_names_file_and_field(name, cls, member, value, field, synthetic):
    parse(name, synthetic[name])  # the unmodified file is fine
    with pytest.raises(FirmwareError, match=rf"{name}: {field}\b"):
        parse(name, _mutate(synthetic[name], cls, member, value))


def test_psp_descriptor_out_of_range_names_the_binary(synthetic):
    name = "amdgpu/psp_13_0_0_sos.bin"
    data = bytearray(synthetic[name])
    desc = ucode.psp_fw_bin_desc.from_buffer(data, ucode.psp_firmware_header_v2_0.SIZE
                                             + ucode.psp_fw_bin_desc.SIZE)
    desc.size_bytes = len(data)
    with pytest.raises(FirmwareError, match=rf"{name}: fw_bin\[1\]\.offset_bytes"):
        parse(name, data)


def test_sos_without_sos_binary_is_refused(synthetic):
    name = "amdgpu/psp_13_0_0_sos.bin"
    data = bytearray(synthetic[name])
    desc = ucode.psp_fw_bin_desc.from_buffer(data, ucode.psp_firmware_header_v2_0.SIZE
                                             + ucode.psp_fw_bin_desc.SIZE)
    assert desc.fw_type == ucode.PSP_FW_TYPE_PSP_SOS
    desc.fw_type = ucode.PSP_FW_TYPE_PSP_DBG_DRV
    with pytest.raises(FirmwareError, match="no SOS binary"):
        parse(name, data)


def test_crc32_mismatch_is_reported_not_refused(synthetic):
    # amdgpu never checks the crc32 (amdgpu_ucode.c only prints it): a flipped payload byte parses
    name = "amdgpu/sdma_6_0_0.bin"
    data = bytearray(synthetic[name])
    data[-1] ^= 0xFF
    image = parse(name, data)
    assert not image.crc32_matches


# ----------------------------------------------------------------------------------------- fuzz


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(images.NAVI31_LAYOUTS)),
       edits=st.lists(st.tuples(st.integers(0, images.HEADER_AREA_BYTES - 1), st.integers(0, 255)),
                      min_size=1, max_size=12),
       cut=st.one_of(st.none(), st.integers(0, 4096)))
def test_fuzzed_headers_raise_only_firmware_errors(name, edits, cut, synthetic):
    data = bytearray(synthetic[name])
    for position, value in edits:
        data[position] = value
    if cut is not None:
        data = data[:cut]
    started = time.monotonic()
    try:
        image = parse(name, data)
    except FirmwareError as exc:
        assert name in str(exc)
    else:
        for section in image.sections:
            assert 0 <= section.offset and section.offset + section.size <= len(data)
        for binary in image.binaries:
            assert 0 <= binary.offset and binary.offset + binary.size <= len(data)
    assert time.monotonic() - started < 1.0


# ---------------------------------------------------------------------------------------- fetch


def test_fetch_uses_the_pinned_package_and_reports_progress(tmp_path, monkeypatch):
    calls = []

    def fake_source_root(package, paths, *, download=True, target_names=()):
        calls.append((package, tuple(paths)))
        fw.sources.progress.info("downloading %s=%s ...", package.name, package.version)
        return tmp_path

    monkeypatch.setattr(fw.sources, "source_root", fake_source_root)
    lines: list[str] = []
    level_before = fw.sources.progress.level
    root = fw.fetch(progress=lines.append)
    assert root == tmp_path / "lib/firmware"
    package, paths = calls[0]
    assert (package.name, package.version, package.suite, package.component) == \
           ("firmware-amd-graphics", "20230210-5", "bookworm", "non-free-firmware")
    assert "lib/firmware/amdgpu/psp_13_0_0_sos.bin" in paths
    assert lines == ["downloading firmware-amd-graphics=20230210-5 ..."]
    assert not any(isinstance(h, fw._CallbackHandler) for h in fw.sources.progress.handlers)
    assert fw.sources.progress.level == level_before
