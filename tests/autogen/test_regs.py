"""Tests of the generated AMD register modules, the register runtime and the register generator.

Values are checked three ways: a handful read by hand from the headers (always run), every register
and field against an independent regex reading of the header text (when linux-source-6.12 is
extracted in the cache), and a full regeneration compared byte for byte with the committed files.
"""
from __future__ import annotations

import pathlib
import re
import types

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autogen import manifest, sources
from autogen import regs as runtime
from autogen.amd import regs as amd_regs
from autogen.amd.regs import gc_11_0_0, hdp_6_0_0, mmhub_3_0_0, mp_13_0_0, nbio_4_3_0, osssys_6_0_0

PACKAGE = "linux-source-6.12"
VERSION = "6.12.117-1"
# the manifest's targets for these modules, by module name
REGISTER_TARGETS = {
    target.name.rsplit(".", 1)[1]: target
    for target in manifest.TARGETS
    if target.kind == manifest.KIND_AMD_REGS
}
SOURCE_ROOT = sources.unpacked_dir(manifest.BY_NAME["amd.regs.gc_11_0_0"].source)
ASIC_REG = "drivers/gpu/drm/amd/include/asic_reg"
# module name -> header path stem inside the package
HEADERS = {
    "gc_11_0_0": f"{ASIC_REG}/gc/gc_11_0_0",
    "mmhub_3_0_0": f"{ASIC_REG}/mmhub/mmhub_3_0_0",
    "nbio_4_3_0": f"{ASIC_REG}/nbio/nbio_4_3_0",
    "mp_13_0_0": f"{ASIC_REG}/mp/mp_13_0_0",
    "osssys_6_0_0": f"{ASIC_REG}/oss/osssys_6_0_0",
    "hdp_6_0_0": f"{ASIC_REG}/hdp/hdp_6_0_0",
}
REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
HAVE_SOURCES = all((SOURCE_ROOT / f"{stem}_offset.h").is_file() for stem in HEADERS.values())
needs_sources = pytest.mark.skipif(
    not HAVE_SOURCES, reason=f"{PACKAGE} {VERSION} is not extracted under {SOURCE_ROOT}"
)

# (module, register, offset, base_idx) read by hand from the *_offset.h headers
KNOWN_REGISTERS = [
    (gc_11_0_0, "regGRBM_STATUS", 0x0DA4, 0),
    (gc_11_0_0, "regCP_MEC_CNTL", 0x0802, 1),
    (gc_11_0_0, "regSDMA0_QUEUE0_RB_CNTL", 0x0080, 0),
    (gc_11_0_0, "ixSQ_WAVE_STATUS", 0x0102, None),
    (mmhub_3_0_0, "regMMVM_INVALIDATE_ENG0_REQ", 0x0763, 0),
    (nbio_4_3_0, "regBIF_BX0_BIF_DOORBELL_CNTL", 0x00FD, 2),
    (nbio_4_3_0, "regRCC_DEV0_EPF0_RCC_CONFIG_MEMSIZE", 0x00C3, 2),
    (nbio_4_3_0, "cfgBIF_CFG_DEV0_EPF0_0_VENDOR_ID", 0xFFFE10200000, None),
    (mp_13_0_0, "regMP0_SMN_C2PMSG_64", 0x0080, 0),
    (mp_13_0_0, "regMP1_SMN_C2PMSG_66", 0x0282, 0),
    (osssys_6_0_0, "regIH_RB_CNTL", 0x0080, 0),
    (hdp_6_0_0, "regHDP_MISC_CNTL", 0x00D3, 0),
]
# (module, register, field, shift, mask) read by hand from the *_sh_mask.h headers
KNOWN_FIELDS = [
    (gc_11_0_0, "regGRBM_STATUS", "GUI_ACTIVE", 31, 0x80000000),
    (gc_11_0_0, "regCP_MEC_CNTL", "MEC_ME1_HALT", 30, 0x40000000),
    (gc_11_0_0, "regSDMA0_QUEUE0_RB_CNTL", "RB_SIZE", 1, 0x0000003E),
    (gc_11_0_0, "ixSQ_WAVE_STATUS", "SPI_PRIO", 1, 0x00000006),
    (mmhub_3_0_0, "regMMVM_INVALIDATE_ENG0_REQ", "PER_VMID_INVALIDATE_REQ", 0, 0x0000FFFF),
    (nbio_4_3_0, "regBIF_BX0_BIF_DOORBELL_CNTL", "DOORBELL_MONITOR_EN", 4, 0x00000010),
    (mp_13_0_0, "regMP0_SMN_C2PMSG_64", "CONTENT", 0, 0xFFFFFFFF),
    (mp_13_0_0, "regMP1_SMN_C2PMSG_66", "CONTENT", 0, 0xFFFFFFFF),
    (osssys_6_0_0, "regIH_RB_CNTL", "RB_SIZE", 1, 0x0000003E),
    (hdp_6_0_0, "regHDP_MISC_CNTL", "IDLE_HYSTERESIS_CNTL", 2, 0x0000000C),
]
MODULES = [gc_11_0_0, mmhub_3_0_0, nbio_4_3_0, mp_13_0_0, osssys_6_0_0, hdp_6_0_0]
_DEFINE = re.compile(r"^#define\s+(\w+)\s+(0x[0-9A-Fa-f]+|\d+)[uUlL]*\s*$", re.M)


def short_name(module: types.ModuleType) -> str:
    return module.__name__.rsplit(".", 1)[1]


# ---- hand-read values: need no source tree


@pytest.mark.parametrize(("module", "name", "offset", "base_idx"), KNOWN_REGISTERS,
                         ids=[entry[1] for entry in KNOWN_REGISTERS])
def test_register_offset_and_base_index_match_the_header(module, name, offset, base_idx):
    register = getattr(module, name)
    assert register.name == name
    assert register.offset == offset
    assert register.base_idx == base_idx
    assert module.get(name) is register


@pytest.mark.parametrize(("module", "register_name", "field_name", "shift", "mask"), KNOWN_FIELDS,
                         ids=[f"{entry[1]}.{entry[2]}" for entry in KNOWN_FIELDS])
def test_field_shift_and_mask_match_the_header(module, register_name, field_name, shift, mask):
    field = module.get(register_name).field(field_name)
    assert (field.name, field.shift, field.mask) == (field_name, shift, mask)


def test_grbm_status_fields_in_header_order():
    names = list(gc_11_0_0.regGRBM_STATUS.fields)
    assert names[:3] == ["ME0PIPE0_CMDFIFO_AVAIL", "SDMA_RQ_PENDING", "ME0PIPE0_CF_RQ_PENDING"]
    assert names[-1] == "GUI_ACTIVE"
    assert len(names) == 22


def test_sdma_registers_live_in_the_gc_module():
    assert amd_regs.load("SDMA", (6, 0, 0)) is gc_11_0_0
    assert "regSDMA1_QUEUE0_RB_CNTL" in gc_11_0_0.names()
    assert amd_regs.load("MP0", (13, 0, 0)) is amd_regs.load("MP1", (13, 0, 0)) is mp_13_0_0


def test_load_of_an_unknown_ip_lists_the_known_ones():
    with pytest.raises(LookupError, match="GC 11.0.0"):
        amd_regs.load("GC", (12, 0, 0))
    with pytest.raises(LookupError, match="nbio_4_3_0"):
        amd_regs.load_module("nbio_9_9_9")


def test_names_lists_every_register_once_in_header_order():
    names = gc_11_0_0.names()
    assert len(names) == len(set(names))
    assert names[0] == "regSDMA0_DEC_START"
    assert "regGRBM_STATUS" in names
    assert "regGRBM_STATUS" in dir(gc_11_0_0)


def test_every_module_records_its_source_and_licence():
    for module in MODULES:
        text = pathlib.Path(module.__file__).read_text()
        assert text.startswith(f"# Generated by autogen.gen_regs from {PACKAGE} {VERSION}")
        assert "Copyright" in text and "Advanced Micro Devices" in text
        assert "Permission is hereby granted, free of charge" in text
        assert module.SOURCE_PACKAGE == PACKAGE
        assert module.SOURCE_VERSION == VERSION
        assert module.SOURCE_PATHS == (
            f"{HEADERS[short_name(module)]}_offset.h",
            f"{HEADERS[short_name(module)]}_sh_mask.h",
        )


def test_untranslatable_definitions_are_listed_with_a_reason():
    skipped = dict(gc_11_0_0.SKIPPED)
    assert "not at the shift 27" in skipped["GL1C_UTCL0_CNTL1__FORCE_IN_ORDER"]
    assert "shift without a _MASK define" in skipped["SQ_CONFIG__DISABLE_SGPR_RD_KILL"]
    assert "has no offset define" in skipped["CP_INT_STAT_DEBUG__PRIV_INSTR_INT_ASSERTED"]
    assert "base_idx is None" in skipped["regGFX_IMU_FUSESTRAP_BASE_IDX"]
    nbio_skipped = dict(nbio_4_3_0.SKIPPED)
    assert "mask without a __SHIFT define" in nbio_skipped[
        "PCIE_LC_RXRECOVER_RXSTANDBY_CNTL__LC_RX_L0S_STANDBY_EN_MASK"]
    with pytest.raises(runtime.FieldError):
        gc_11_0_0.regGL1C_UTCL0_CNTL1.field("FORCE_IN_ORDER")


# ---- runtime behaviour


def test_encode_decode_update():
    register = gc_11_0_0.regSDMA0_QUEUE0_RB_CNTL
    rb_size = register.field("RB_SIZE")
    value = register.encode(RB_SIZE=0x1F)
    assert value == 0x1F << rb_size.shift
    assert register.decode(value)["RB_SIZE"] == 0x1F
    old = 0xFFFFFFFF
    updated = register.update(old, RB_SIZE=3)
    assert updated & ~rb_size.mask == old & ~rb_size.mask
    assert rb_size.decode(updated) == 3


def test_unknown_field_raises_field_error_with_close_matches():
    with pytest.raises(runtime.FieldError, match="CP_BUSY"):
        gc_11_0_0.regGRBM_STATUS.encode(CP_BUZY=1)
    with pytest.raises(runtime.FieldError, match="has no field"):
        gc_11_0_0.regGRBM_STATUS.field("NOT_A_FIELD")
    with pytest.raises(runtime.FieldError):
        gc_11_0_0.regGRBM_STATUS.update(0, NOT_A_FIELD=0)


@pytest.mark.parametrize("bad_value", [2, -1, 1 << 40])
def test_value_too_wide_or_negative_raises_field_error(bad_value):
    with pytest.raises(runtime.FieldError, match="GUI_ACTIVE"):
        gc_11_0_0.regGRBM_STATUS.encode(GUI_ACTIVE=bad_value)


def test_non_int_value_and_negative_register_value_are_refused():
    with pytest.raises(runtime.FieldError, match="not an int"):
        gc_11_0_0.regGRBM_STATUS.encode(GUI_ACTIVE="1")
    with pytest.raises(runtime.FieldError, match="negative"):
        gc_11_0_0.regGRBM_STATUS.update(-1, GUI_ACTIVE=1)


def test_field_error_is_a_value_error():
    assert issubclass(runtime.FieldError, ValueError)


def test_unknown_register_raises_attribute_error_naming_close_matches():
    with pytest.raises(AttributeError, match="regGRBM_STATUS"):
        gc_11_0_0.regGRBM_STATSU
    with pytest.raises(AttributeError, match="did you mean"):
        gc_11_0_0.get("regGRBM_STATSU")
    with pytest.raises(runtime.UnknownRegister):
        mp_13_0_0.regMP1_SMN_C2PMSG_999
    assert not hasattr(gc_11_0_0, "__path__")


ROUND_TRIP_REGISTERS = [
    gc_11_0_0.regGRBM_STATUS,
    gc_11_0_0.regCP_MEC_CNTL,
    gc_11_0_0.regSDMA0_QUEUE0_RB_CNTL,
    gc_11_0_0.ixSQ_WAVE_STATUS,
    mmhub_3_0_0.regMMVM_INVALIDATE_ENG0_REQ,
    nbio_4_3_0.regBIF_BX0_BIF_DOORBELL_CNTL,
    osssys_6_0_0.regIH_RB_CNTL,
    hdp_6_0_0.regHDP_MISC_CNTL,
    mp_13_0_0.regMP1_SMN_C2PMSG_66,
]


@st.composite
def register_with_values(draw):
    register = draw(st.sampled_from(ROUND_TRIP_REGISTERS))
    values = {
        name: draw(st.integers(min_value=0, max_value=field.max_value))
        for name, field in register.fields.items()
    }
    return register, values


@settings(max_examples=200, deadline=None)
@given(register_with_values())
def test_decode_of_encode_round_trips(case):
    register, values = case
    assert register.decode(register.encode(**values)) == values


@settings(max_examples=200, deadline=None)
@given(register_with_values(), st.integers(min_value=0, max_value=0xFFFFFFFF))
def test_update_changes_only_the_named_fields(case, old_value):
    register, values = case
    name = next(iter(values))
    updated = register.update(old_value, **{name: values[name]})
    field = register.field(name)
    assert field.decode(updated) == values[name]
    assert updated & ~field.mask == old_value & ~field.mask


# ---- against the header text (needs the extracted source tree)


def _defines(path: pathlib.Path) -> dict[str, int]:
    return {name: int(value, 0) for name, value in _DEFINE.findall(path.read_text())}


@needs_sources
@pytest.mark.parametrize("module", MODULES, ids=short_name)
def test_every_register_and_field_matches_the_header_text(module):
    stem = SOURCE_ROOT / HEADERS[short_name(module)]
    offsets = _defines(stem.with_name(stem.name + "_offset.h"))
    masks = _defines(stem.with_name(stem.name + "_sh_mask.h"))
    skipped = {name for name, _reason in module.SKIPPED}
    register_names = [name for name in offsets if not name.endswith("_BASE_IDX")]
    assert list(module.names()) == register_names
    for name in register_names:
        register = module.get(name)
        assert register.offset == offsets[name], name
        assert register.base_idx == offsets.get(name + "_BASE_IDX"), name
        register_stem = re.sub(r"^[a-z]+", "", name)
        for field in register.fields.values():
            header_name = f"{register_stem}__{field.name}"
            assert field.shift == masks[header_name + "__SHIFT"], header_name
            assert field.mask == masks[header_name + "_MASK"], header_name
    # every field define of the header is either generated or named in SKIPPED
    generated = {
        f"{re.sub(r'^[a-z]+', '', register.name)}__{field_name}"
        for register in map(module.get, register_names)
        for field_name in register.fields
    }
    for define in masks:
        field_stem = re.sub(r"(__SHIFT|_MASK)$", "", define)
        assert field_stem in generated or field_stem in skipped or define in skipped, define


def test_manifest_has_one_target_per_register_module():
    assert sorted(REGISTER_TARGETS) == sorted(amd_regs.MODULES)
    for module_name, target in REGISTER_TARGETS.items():
        assert (target.package, target.version) == (PACKAGE, VERSION)
        assert target.paths == (f"{HEADERS[module_name]}_offset.h", f"{HEADERS[module_name]}_sh_mask.h")


@needs_sources
def test_regenerating_reproduces_the_committed_files_byte_for_byte():
    from autogen import gen_regs

    for module_name, target in REGISTER_TARGETS.items():
        outputs = gen_regs.generate(target, SOURCE_ROOT)
        assert list(outputs) == [f"autogen/amd/regs/{module_name}.py"]
        for relative_path, text in outputs.items():
            committed = (REPO_ROOT / relative_path).read_text()
            assert text == committed, f"{relative_path} differs from a fresh generation"


# ---- the generator on a small synthetic header pair (needs libclang, not the source tree)

SYNTHETIC_NOTICE = "/*\n * Copyright 2024 Example\n *\n * Permission is hereby granted.\n */\n"
SYNTHETIC_OFFSET = SYNTHETIC_NOTICE + """\
#ifndef _toy_1_0_0_OFFSET_HEADER
#define _toy_1_0_0_OFFSET_HEADER
#define regTOY_CTRL                 0x0010
#define regTOY_CTRL_BASE_IDX        1
#define regTOY_STATUS               0x0011
#define regTOY_STATUS_BASE_IDX      0
#define regTOY_NO_SEGMENT           0x0012
#define regTOY_GONE_BASE_IDX        0
#define ixTOY_INDEXED               017
#define regTOY_EXPR                 (0x10 + 1)
#define TOY_FUNCTION(x)             ((x) + 1)
#endif
"""
SYNTHETIC_SH_MASK = SYNTHETIC_NOTICE + """\
#define TOY_CTRL__ENABLE__SHIFT            0x0
#define TOY_CTRL__MODE__SHIFT              0x4
#define TOY_CTRL__ENABLE_MASK              0x00000001L
#define TOY_CTRL__MODE_MASK                0x000000F0L
#define TOY_STATUS__BUSY__SHIFT            0x1f
#define TOY_STATUS__BUSY_MASK              0x80000000L
#define TOY_STATUS__SHIFTLESS_MASK         0x00000002L
#define TOY_STATUS__MASKLESS__SHIFT        0x3
#define TOY_STATUS__CROOKED__SHIFT         0x5
#define TOY_STATUS__CROOKED_MASK           0x00000030L
#define TOY_STATUS__GAPPY__SHIFT           0x8
#define TOY_STATUS__GAPPY_MASK             0x00000500L
#define TOY_MISSING__FIELD__SHIFT          0x0
#define TOY_MISSING__FIELD_MASK            0x00000001L
#define TOY_INDEXED__LOW__SHIFT            0x0
#define TOY_INDEXED__LOW_MASK              0x0000FFFFL
"""


@pytest.fixture()
def synthetic(tmp_path):
    clang = pytest.importorskip("clang.cindex")
    del clang
    from autogen import gen_regs

    root = tmp_path / "toypkg_1.2-3"
    headers = root / "include"
    headers.mkdir(parents=True)
    (headers / "toy_1_0_0_offset.h").write_text(SYNTHETIC_OFFSET)
    (headers / "toy_1_0_0_sh_mask.h").write_text(SYNTHETIC_SH_MASK)
    target = types.SimpleNamespace(
        name="toy", paths=["include/toy_1_0_0_offset.h", "include/toy_1_0_0_sh_mask.h"]
    )
    outputs = gen_regs.generate(target, root)
    assert list(outputs) == ["autogen/amd/regs/toy_1_0_0.py"]
    text = outputs["autogen/amd/regs/toy_1_0_0.py"]
    module = types.ModuleType("toy_1_0_0")
    exec(compile(text, "toy_1_0_0.py", "exec"), module.__dict__)
    return gen_regs, target, root, text, module


def test_generator_translates_registers_fields_and_segments(synthetic):
    _gen_regs, _target, _root, text, module = synthetic
    assert text.startswith("# Generated by autogen.gen_regs from toypkg 1.2-3")
    assert "Copyright 2024 Example" in text
    assert module.names() == ("regTOY_CTRL", "regTOY_STATUS", "regTOY_NO_SEGMENT", "ixTOY_INDEXED")
    control = module.get("regTOY_CTRL")
    assert (control.offset, control.base_idx) == (0x10, 1)
    layout = [(field.name, field.shift, field.mask) for field in control.fields.values()]
    assert layout == [("ENABLE", 0, 1), ("MODE", 4, 0xF0)]
    assert control.encode(ENABLE=1, MODE=0xA) == 0xA1
    assert module.get("ixTOY_INDEXED").offset == 0o17
    assert module.get("ixTOY_INDEXED").base_idx is None
    assert list(module.get("regTOY_STATUS").fields) == ["BUSY"]


def test_generator_lists_everything_it_could_not_translate(synthetic):
    _gen_regs, _target, _root, _text, module = synthetic
    skipped = dict(module.SKIPPED)
    assert "empty definition" in skipped["_toy_1_0_0_OFFSET_HEADER"]
    assert "not a single integer literal" in skipped["regTOY_EXPR"]
    assert "function-like" in skipped["TOY_FUNCTION"]
    assert "which has no offset" in skipped["regTOY_GONE_BASE_IDX"]
    assert "base_idx is None" in skipped["regTOY_NO_SEGMENT_BASE_IDX"]
    assert "mask without" in skipped["TOY_STATUS__SHIFTLESS_MASK"]
    assert "shift without" in skipped["TOY_STATUS__MASKLESS"]
    assert "starts at bit 4, not at the shift 5" in skipped["TOY_STATUS__CROOKED"]
    assert "not contiguous" in skipped["TOY_STATUS__GAPPY"]
    assert "has no offset define" in skipped["TOY_MISSING__FIELD"]


def test_generator_output_is_deterministic(synthetic):
    gen_regs, target, root, text, _module = synthetic
    assert gen_regs.generate(target, root)["autogen/amd/regs/toy_1_0_0.py"] == text


def test_generator_refuses_an_unpaired_header(synthetic):
    gen_regs, _target, root, _text, _module = synthetic
    lonely = types.SimpleNamespace(name="toy", paths=["include/toy_1_0_0_offset.h"])
    with pytest.raises(gen_regs.RegisterHeaderError, match="sh_mask"):
        gen_regs.generate(lonely, root)
    missing = types.SimpleNamespace(name="toy", paths=["x_offset.h", "x_sh_mask.h"])
    with pytest.raises(gen_regs.RegisterHeaderError, match="no such header"):
        gen_regs.generate(missing, root)


def test_generator_reports_clang_errors_with_file_and_line(synthetic):
    gen_regs, _target, root, _text, _module = synthetic
    (root / "include" / "bad_offset.h").write_text("#define regX 0x1\nint broken(\n")
    (root / "include" / "bad_sh_mask.h").write_text("")
    bad = types.SimpleNamespace(name="bad", paths=["include/bad_offset.h", "include/bad_sh_mask.h"])
    with pytest.raises(gen_regs.RegisterHeaderError, match=r"bad_offset\.h:\d+"):
        gen_regs.generate(bad, root)
