"""autogen.xml_regs and its modules autogen.qcom.a6xx / autogen.qcom.pm4: known registers, fields and
opcodes against the text of Mesa's register XML, the front end on a synthetic database (variants,
stripes, arrays, bitset types, 64-bit registers), and regeneration byte for byte."""
from __future__ import annotations

import pathlib
import subprocess
import sys
import types

import pytest

from autogen import manifest, sources, xml_regs
from autogen.qcom import a6xx, pm4

REPOSITORY = pathlib.Path(__file__).resolve().parents[2]


def _xml_text(name: str) -> str:
    target = manifest.BY_NAME["qcom.a6xx"]
    try:
        root = sources.source_root(target.source, target.paths, download=False)
    except sources.SourceUnavailable as exc:
        pytest.skip(f"mesa sources not on this machine: {exc}")
    return (root / manifest.MESA_FREEDRENO_REGS / name).read_text()


def test_a6xx_registers_match_the_xml():
    text = _xml_text("a6xx.xml")
    assert '<reg32 offset="0xa9b0" name="SP_CS_CTRL_REG0" type="a6xx_sp_xs_ctrl_reg0"' in text
    assert '<bitfield name="FULLREGFOOTPRINT" low="7" high="12" type="uint"/>' in text
    control = a6xx.REG_A6XX_SP_CS_CTRL_REG0
    assert control.offset == 0xa9b0
    # the fields come from the bitset the register's type names, then the register's own
    assert control.field("FULLREGFOOTPRINT").shift == 7
    assert control.field("FULLREGFOOTPRINT").mask == 0x3f << 7
    assert control.field("THREADSIZE").mask == 1 << 20
    # HLSQ_CS_NDRANGE_0 is at 0xb990 on A6XX and at 0xa9d4 from A7XX on: the A6XX one is kept
    assert '<reg32 offset="0xb990" name="HLSQ_CS_NDRANGE_0" variants="A6XX"' in text
    assert '<reg32 offset="0xa9d4" name="HLSQ_CS_NDRANGE_0" variants="A7XX-"' in text
    assert a6xx.REG_A6XX_HLSQ_CS_NDRANGE_0.offset == 0xb990
    assert a6xx.REG_A6XX_HLSQ_CS_NDRANGE_0.encode(LOCALSIZEX=63) == 63 << 2
    assert a6xx.REG_A6XX_HLSQ_CS_NDRANGE_6.offset == 0xb996
    assert a6xx.FIELD_TYPES["REG_A6XX_HLSQ_CS_CNTL_0.WGIDCONSTID"] == "a3xx_regid"


def test_a6xx_arrays():
    text = _xml_text("a6xx.xml")
    assert '<array offset="0x0883" name="CP_SCRATCH" stride="1" length="8">' in text
    assert a6xx.ARRAYS["REG_A6XX_CP_SCRATCH_REG"] == (1, 8)
    assert a6xx.element("REG_A6XX_CP_SCRATCH_REG", 7) == 0x883 + 7
    with pytest.raises(IndexError):
        a6xx.element("REG_A6XX_CP_SCRATCH_REG", 8)


def test_pm4_opcodes_and_packets_match_the_xml():
    text = _xml_text("adreno_pm4.xml")
    assert '<value name="CP_EXEC_CS" value="0x33"/>' in text
    assert '<value name="CP_LOAD_STATE6" value="0x36" variants="A6XX-"/>' in text
    assert '<value name="CP_EVENT_WRITE" value="0x46" variants="A2XX-A6XX"/>' in text
    assert '<value name="CP_TYPE7_PKT" value="0x70000000"/>' in text
    assert (pm4.CP_EXEC_CS, pm4.CP_LOAD_STATE6, pm4.CP_EVENT_WRITE) == (0x33, 0x36, 0x46)
    assert pm4.CP_TYPE7_PKT == 0x70000000
    assert pm4.ENUMS["adreno_pm4_type3_packets"]["CP_NOP"] == 0x10
    assert pm4.CACHE_FLUSH_TS == 4 and pm4.ENUMS["vgt_event_type"]["CACHE_FLUSH_TS"] == 4
    load = pm4.CP_LOAD_STATE6_0
    assert load.offset == 0
    word = load.encode(DST_OFF=0, STATE_TYPE=pm4.ST6_CONSTANTS, STATE_SRC=pm4.SS6_DIRECT,
                       STATE_BLOCK=pm4.SB6_CS_SHADER, NUM_UNIT=4)
    assert word == (1 << 14) | (0 << 16) | (0xd << 18) | (4 << 22)
    assert pm4.FIELD_SHR["CP_LOAD_STATE6_1.EXT_SRC_ADDR"] == 2
    assert "CP_LOAD_STATE6_EXT_SRC_ADDR" in pm4.REG64
    assert pm4.CP_EXEC_CS_1.field("NGROUPS_X").mask == 0xffffffff
    assert pm4.CP_EVENT_WRITE_0.field("IRQ").shift == 31


SYNTHETIC = """<?xml version="1.0" encoding="UTF-8"?>
<database xmlns="http://nouveau.freedesktop.org/">
<enum name="chip" bare="yes">
  <value name="A5XX" value="5"/><value name="A6XX" value="6"/><value name="A7XX" value="7"/>
</enum>
<enum name="mode"><value name="OLD" value="1" variants="A5XX"/><value name="NEW" value="0x2"/></enum>
<bitset name="ctrl_bits" inline="yes">
  <bitfield name="LOW" low="0" high="3" type="mode"/>
  <bitfield name="LATE" pos="9" variants="A7XX-"/>
</bitset>
<domain name="GPU" width="32" varset="chip">
  <reg32 offset="0x10" name="CTRL" type="ctrl_bits"><bitfield name="TOP" pos="31" type="boolean"/></reg32>
  <reg32 offset="0x20" name="MOVED" variants="A5XX-A6XX"/>
  <reg32 offset="0x30" name="MOVED" variants="A7XX-"/>
  <array offset="0x100" name="TABLE" stride="2" length="4">
    <reg32 offset="0" name="LO"/><reg64 offset="1" name="ADDR" type="address"/>
  </array>
  <stripe varset="chip" variants="A7XX-"><reg32 offset="0x40" name="NEWER"/></stripe>
  <reg32 offset="0x50" name="ADDR_LO"><bitfield name="ADDR" low="2" high="31" shr="2"/></reg32>
  <reg32 offset="0x60" name="PKT" varset="kind">
    <bitfield name="A" low="0" high="7" variants="KIND_A"/>
    <bitfield name="B" low="0" high="15" variants="KIND_B"/>
  </reg32>
</domain>
</database>
"""
COPYRIGHT = """<?xml version="1.0" encoding="UTF-8"?>
<database xmlns="http://nouveau.freedesktop.org/"><copyright year="2024">
<author name="Someone">x</author><license>Permission is granted.</license></copyright></database>
"""


def _synthetic(tmp_path, variant: str):
    (tmp_path / "regs.xml").write_text(SYNTHETIC)
    (tmp_path / "freedreno_copyright.xml").write_text(COPYRIGHT)
    target = types.SimpleNamespace(
        name="test.synthetic", package="pkg", version="1", licence="MIT", variant=variant,
        paths=("regs.xml", "freedreno_copyright.xml"), also_emit=(), domain_prefixes={"GPU": "REG_"},
        output="synthetic.py", description="Synthetic registers.")
    text = xml_regs.generate(target, tmp_path)["synthetic.py"]
    module = types.ModuleType("synthetic")
    exec(compile(text, "synthetic.py", "exec"), module.__dict__)
    return module, text


def test_front_end_keeps_one_chip_variant(tmp_path):
    six, text = _synthetic(tmp_path, "A6XX")
    assert "Copyright 2024 Someone" in text and "Permission is granted." in text
    assert six.ENUMS["mode"] == {"NEW": 2}
    assert six.get("REG_MOVED").offset == 0x20
    assert "REG_NEWER" not in six.names()
    assert list(six.get("REG_CTRL").fields) == ["LOW", "TOP"]
    assert six.FIELD_TYPES["REG_CTRL.LOW"] == "mode"
    seven, _ = _synthetic(tmp_path, "A7XX")
    assert seven.get("REG_MOVED").offset == 0x30
    assert seven.get("REG_NEWER").offset == 0x40
    assert list(seven.get("REG_CTRL").fields) == ["LOW", "LATE", "TOP"]
    assert "OLD" not in seven.ENUMS["mode"]


def test_front_end_arrays_wide_registers_and_packet_modes(tmp_path):
    module, _ = _synthetic(tmp_path, "A6XX")
    assert module.ARRAYS["REG_TABLE_ADDR"] == (2, 4)
    assert module.element("REG_TABLE_ADDR", 3) == 0x101 + 2 * 3
    assert module.REG64 == frozenset({"REG_TABLE_ADDR"})
    assert module.FIELD_SHR == {"REG_ADDR_LO.ADDR": 2}
    # fields of another varset are alternative layouts of the same bits: both kept, by name
    assert module.get("REG_PKT").field("B").mask == 0xffff
    assert module.get("REG_PKT").field("A").mask == 0xff


def test_regeneration_is_byte_identical():
    _xml_text("a6xx.xml")
    result = subprocess.run([sys.executable, "-m", "autogen", "--check", "--offline", "qcom.a6xx",
                             "qcom.pm4"], capture_output=True, text=True, cwd=REPOSITORY, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("up to date") == 2
