"""autogen.nv_fields (the generator of NVIDIA's "hi:lo" and MW(hi:lo) field macros) on synthetic
header text, and the generated QMD and class-field tables the submission code uses."""
from __future__ import annotations

import pytest

from autogen import nv_fields
from autogen.nv import qmd as qmd_layout
from autogen.nv.r535 import fields
from drivers.nv import qmd

HEADER = """
#define NVX_QMDV03_00_WIDTH                      MW(415:384)
#define NVX_QMDV03_00_ENABLE                     MW(640:640)
#define NVX_QMDV03_00_ENABLE_TRUE                0x00000001
#define NVX_QMDV03_00_BANK_ADDR(i)               MW((1055+(i)*64):(1024+(i)*64))
#define NVX_METHOD                               (0x0000006c)
#define NVX_METHOD_OPERATION                     2:0  /* comment */
#define NVX_METHOD_ARRAY(j)                      (0x0400+(j)*4)
#define OTHER_FIELD                              7:0
"""


def test_ranges_indexed_fields_and_values() -> None:
    found, indexed, values = nv_fields.parse(HEADER, ("NVX_",), "synthetic.h")
    assert found == {"NVX_QMDV03_00_WIDTH": (415, 384), "NVX_QMDV03_00_ENABLE": (640, 640),
                     "NVX_METHOD_OPERATION": (2, 0)}
    assert indexed == {"NVX_QMDV03_00_BANK_ADDR": (1055, 1024, 64)}
    assert values == {"NVX_QMDV03_00_ENABLE_TRUE": 1, "NVX_METHOD": 0x6C}


def test_conflicting_definitions_are_refused() -> None:
    with pytest.raises(nv_fields.FieldHeaderError, match="NVX_A defined as"):
        nv_fields.parse("#define NVX_A 3:0\n#define NVX_A 4:0\n", ("NVX_",), "x.h")
    with pytest.raises(nv_fields.FieldHeaderError, match="runs backwards"):
        nv_fields.parse("#define NVX_A 0:3\n", ("NVX_",), "x.h")


def test_ada_and_ga10x_qmd_layout_is_ga100s_for_every_field_used() -> None:
    for name in qmd._SCALAR:
        assert (qmd_layout.FIELDS[f"NVC6C0_QMDV03_00_{name}"]
                == qmd_layout.FIELDS[f"NVC7C0_QMDV03_00_{name}"]), name
    for name in qmd._BANK0.values():
        assert (qmd_layout.INDEXED[f"NVC6C0_QMDV03_00_{name}"]
                == qmd_layout.INDEXED[f"NVC7C0_QMDV03_00_{name}"]), name
    assert len(qmd.FIELDS) == len(qmd._SCALAR) + len(qmd._BANK0)


def test_class_fields_the_submission_relies_on() -> None:
    assert fields.FIELDS["NVC56F_GP_ENTRY1_GET_HI"] == (7, 0)
    assert fields.FIELDS["NVC86F_SEM_ADDR_HI_OFFSET"] == (24, 0)  # Hopper widens the semaphore address
    assert fields.FIELDS["NVC56F_SEM_EXECUTE_RELEASE_TIMESTAMP"] == (25, 25)
    assert fields.FIELDS["NVC6B5_LAUNCH_DMA_DST_MEMORY_LAYOUT"] == (8, 8)


@pytest.mark.parametrize("layout", [qmd.V03_00, qmd.V04_00], ids=["03_00", "04_00"])
def test_the_qmd_carries_sass_version_group_and_bank0_invalidate(layout) -> None:
    # 03_00 as tinygrad's ops_nv.py fills it for nvcc code; 04_00 as Mesa's NAK fills it (group and
    # SASS version left 0); bank 0 invalidated in both (drivers.nv.qmd QMD.build)
    base = dict(program_address=0x1000, grid=(1, 1, 1), block=(32, 1, 1), constant0_address=0x2000,
                constant0_size=0x230, registers=16, shared_bytes=0, local_bytes_per_thread=0x240,
                shared_limit_kib=228, layout=layout)
    data = qmd.QMD(**base, sm_version=90).build()
    v03 = layout is qmd.V03_00
    assert qmd.field(data, "SASS_VERSION", layout) == (0x90 if v03 else 0)
    assert qmd.field(data, "QMD_GROUP_ID", layout) == (0x3F if v03 else 0)
    assert qmd.field(data, "CONSTANT_BUFFER_INVALIDATE0", layout) == 1
    assert qmd.field(qmd.QMD(**base, sm_version=86).build(), "SASS_VERSION", layout) == (0x86 if v03 else 0)
