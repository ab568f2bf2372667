"""Strict mode over a whole bring-up: every register the driver touches is either modelled by the
mock (owned by a model) or listed here as a plain register with the reason it needs no model.

A register that appears in neither fails the test: model it in the model that owns its block (with
the kernel citation), or add it below with a one-line reason why the hardware keeps nothing but the
value there for what this driver does.
"""
from __future__ import annotations

import re

import pytest

import hal
from drivers.am.device import AMConfig, AMDevice
from drivers.am.gmc import GFX_HUB
from mockgpu import GPU_BDF, Machine

GPU = f"pci:{GPU_BDF}"
PAGE = 4096
HUB = r"(GC regGC|MMHUB regMM)"  # the same register in the GFX hub (GC) and the MMHUB

# (pattern over "BLOCK regNAME", reason the register is plain storage for what the driver does)
PLAIN_REGISTERS: tuple[tuple[str, str], ...] = (
    (HUB + r"VM_L2_CNTL[345]?",
     "L2 cache enables, bank and fragment sizes: the model keeps no L2 (each walk reads the tables)"),
    (HUB + r"VM_L2_PROTECTION_FAULT_CNTL2",
     "retry-fault and page-migration policy: the model raises no retry faults (gmc v11 noretry)"),
    (HUB + r"VM_L2_PROTECTION_FAULT_DEFAULT_ADDR_(LO|HI)32",
     "the dummy page faulting accesses are redirected to: the model reports faults, never redirects"),
    (HUB + r"VM_L2_CONTEXT1_IDENTITY_APERTURE_(LOW|HIGH)_ADDR_(LO|HI)32",
     "identity aperture, programmed empty by *_disable_identity_aperture: nothing to translate"),
    (HUB + r"VM_L2_CONTEXT_IDENTITY_PHYSICAL_OFFSET_(LO|HI)32",
     "offset of the (empty) identity aperture"),
    (HUB + r"VM_INVALIDATE_ENG\d+_ADDR_RANGE_(LO|HI)32",
     "ranges of range-based invalidation; legacy per-VMID requests (all this driver sends) ignore them"),
    (r"GC regCP_DEBUG",
     "CP debug controls (CPG_UTCL1_ERROR_HALT_DISABLE): no CP model takes UTCL1 errors here"),
    (r"GC regSCRATCH_REG\d",
     "scratch registers: plain storage on the hardware too, kept across processes"),
    (r"GC regCP_MEC_RS64_PRGRM_CNTR_START(_HI)?",
     "the RS64 MEC's program start: the model runs PM4 itself, no microcode fetches from there"),
    (r"GC regCP_PQ_WPTR_POLL_CNTL",
     "wptr polling, left off (EN 0) by gfx_v11_0_kiq_init_register: doorbells only, no poller"),
    (r"GC regGRBM_CNTL",
     "the GRBM's register-read timeout: register reads in the model never time out"),
    (r"GC regSH_MEM_(CONFIG|BASES)",
     "shader aperture and alignment modes per VMID: no shader code runs in the model"),
    (r"GC regTCP_CNTL",
     "a texture-cache tuning bit of golden_settings_gc_11_0: the model has no caches"),
    (r"NBIO regS2A_DOORBELL_ENTRY_3_CTRL",
     "GC's second doorbell route (gfx and MES doorbells); the MEC's route 0 is the MEC model's"),
    (r"OSSSYS regIH_RB_CNTL_RING1",
     "IH ring 1, left disabled by ih_v6_0 without a ring 1: the model has ring 0 only"),
    (r"OSSSYS regIH_CNTL2",
     "the self-interrupt wptr update: the model writes the wptr back with every entry anyway"),
    (r"OSSSYS regIH_(INT_FLOOD_CNTL|MSI_STORM_CTRL|STORM_CLIENT_LIST_CNTL)",
     "storm and flood thresholds: the model posts every entry, no rate limiting to configure"),
)


@pytest.fixture
def machine(tmp_path):
    return Machine.default(lock_dir=str(tmp_path))


def unlisted(names: set[str]) -> list[str]:
    return sorted(name for name in names
                  if not any(re.fullmatch(pattern, name) for pattern, _ in PLAIN_REGISTERS))


def test_every_register_a_bring_up_touches_is_modelled_or_listed_as_plain(machine):
    gpu = machine.device(GPU_BDF)
    gpu.regfile.strict = True
    with hal.open(GPU, os=machine.os, unbind=True) as pci:
        dev = AMDevice(pci, config=AMConfig(sdma_staging_size=2 * PAGE))
        # some work on top of the bring-up: host memory through the GART, copies, SMU metrics
        sdma = dev.block("SDMA")
        vram = dev.memory.alloc_vram(3 * PAGE, purpose="strict mode copy")
        sdma.copy_to_vram(vram, bytes(range(256)) * 20, offset=3)
        assert sdma.copy_from_vram(vram, 5120, offset=3) == bytes(range(256)) * 20
        dev.block("SMU").metrics()
        dev.fini()
    names = {access.name or f"{access.address:#x}" for access in gpu.regfile.unowned}
    assert names, "strict mode recorded nothing: is the register file still in strict mode?"
    missing = unlisted(names)
    assert not missing, ("registers no model owns and PLAIN_REGISTERS does not list (model them, or list "
                         "them with a reason): " + ", ".join(missing))


def test_the_check_fails_for_a_register_nobody_models(machine):
    gpu = machine.device(GPU_BDF)
    gpu.regfile.strict = True
    with hal.open(GPU, os=machine.os, unbind=True) as pci:
        dev = AMDevice(pci, block_order=("NBIO",))
        dev.registers.reg("GC", "regGRBM_STATUS").read()
        dev.fini()
    names = {access.name for access in gpu.regfile.unowned}
    assert unlisted(names) == ["GC regGRBM_STATUS"]


def test_registers_the_gmc_model_reads_are_its_own(machine):
    gpu = machine.device(GPU_BDF)
    regfile = gpu.regfile
    for ip, name in gpu.gmc.read_registers():
        assert regfile.owned(regfile.address(ip, name)), name
    assert regfile.owned(regfile.address("MP0", "regMP0_SMN_C2PMSG_33"))


def test_l2_cntl2_invalidate_bits_drop_the_hubs_cached_translations(machine):
    gpu = machine.device(GPU_BDF)
    with hal.open(GPU, os=machine.os, unbind=True) as pci:
        dev = AMDevice(pci, block_order=("NBIO", "HDP", "GMC"))
        gart = dev.block("GMC").gart
        host = pci.alloc_dma(PAGE)
        mapping = gart.map(host)
        gpu.gmc.translate(GFX_HUB, 0, mapping.va)
        hub = gpu.gmc.hubs[GFX_HUB]
        assert any(hub.tlb[0].values())
        cntl2 = dev.registers.reg("GC", "regGCVM_L2_CNTL2")
        cntl2.update(INVALIDATE_ALL_L1_TLBS=1, INVALIDATE_L2_CACHE=1)
        assert not any(hub.tlb[0].values())  # gfxhub_v3_0_init_cache_regs's invalidation
        assert cntl2.read_field("INVALIDATE_L2_CACHE") == 1  # the value reads back
        dev.fini()
        pci.free_dma(host)
