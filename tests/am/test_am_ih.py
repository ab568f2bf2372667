"""The AM IH block (IH 6.0) against the mock Navi31: entries round trip, VM faults from the GMC
model, overflow, MSI-X wakes a wait, hangs and a vanished device."""
from __future__ import annotations

import pytest

import hal
from autogen.amd import irqsrcs_gfx_11_0_0 as gfx
from autogen.amd import soc15_ih_clientid as clients
from autogen.amd.regs import osssys_6_0_0 as oss
from drivers.am.device import BLOCK_ORDER, AMConfig, AMDevice
from drivers.am.ih import ENTRY_BYTES, CPFault, IHv6_0, RASError, SQError, VMFault
from hal.errors import DeviceLost, DeviceTimeout, InvalidArgument
from mockgpu import GPU_AUDIO_BDF, GPU_BDF, Machine
from mockgpu.amd.gmc import Access, GPUVMFault
from mockgpu.amd.gpu import NAVI31_FB_BASE

APERTURE_SHIFT = 18  # gfxhub/mmhub init_system_aperture_regs: the aperture in 256 KiB units
# the blocks the IH needs brought up before it: NBIO, HDP and, once the driver has it, GMC
ORDER = tuple(block for block in BLOCK_ORDER if block in ("NBIO", "HDP", "GMC", "IH"))


@pytest.fixture
def machine(tmp_path):
    machine = Machine.default(lock_dir=str(tmp_path))
    machine.kernel.unbind(GPU_AUDIO_BDF, "snd_hda_intel")  # so vfio can take the GPU's group
    return machine


def need_gmc(gpu) -> None:
    if getattr(gpu, "gmc", None) is None:
        pytest.skip("the GMC model is not wired into this GPU")


def bring_up(pci, gpu, **config) -> tuple[AMDevice, IHv6_0]:
    if "GMC" not in ORDER:
        # stands in for the GMC block: VMID 0's system aperture over VRAM (gmc_v11_0 hw_init)
        top = NAVI31_FB_BASE + gpu.vram_size - 1
        for ip, prefix in (("MMHUB", "regMMMC_VM_"), ("GC", "regGCMC_VM_")):
            gpu.regfile.set(ip, prefix + "SYSTEM_APERTURE_LOW_ADDR", NAVI31_FB_BASE >> APERTURE_SHIFT)
            gpu.regfile.set(ip, prefix + "SYSTEM_APERTURE_HIGH_ADDR", top >> APERTURE_SHIFT)
    dev = AMDevice(pci, config=AMConfig(**config), block_order=ORDER)
    return dev, dev.block("IH")


def test_entries_round_trip_from_the_model_to_typed_events(machine):
    gpu = machine.device(GPU_BDF)
    with hal.open(f"pci:{GPU_BDF}", os=machine.os, unbind=True) as pci:
        dev, ih = bring_up(pci, gpu)
        assert not ih.msix  # the sysfs backend delivers no interrupts: the IH polls
        gpu.regfile.set("OSSSYS", "regIH_VMID_2_LUT", 0x77)
        gpu.ih.post(clients.SOC21_IH_CLIENTID_GRBM_CP, gfx.GFX_11_0_0__SRCID__CP_EOP_INTERRUPT,
                    (0x11, 0x22, 0x33, 0x44), ring_id=0x15, vmid=2)
        gpu.ih.post(clients.SOC21_IH_CLIENTID_GRBM_CP, gfx.GFX_11_0_0__SRCID__CP_PRIV_REG_FAULT,
                    ring_id=0x25)
        events = ih.process()
        assert [event.kind for event in events] == ["interrupt", "cp_fault"]
        eop = events[0].entry
        assert (eop.client_id, eop.source_id, eop.ring_id, eop.vmid, eop.pasid) == (
            clients.SOC21_IH_CLIENTID_GRBM_CP, gfx.GFX_11_0_0__SRCID__CP_EOP_INTERRUPT, 0x15, 2, 0x77)
        assert eop.src_data == (0x11, 0x22, 0x33, 0x44)
        assert events[1].entry.timestamp >= eop.timestamp
        fault = events[1].error
        assert isinstance(fault, CPFault)
        assert (fault.kind, fault.me, fault.pipe, fault.queue) == ("privileged register", 1, 1, 2)
        # the read pointer went back to the hardware: the ring has room for the next
        assert gpu.ih.read_pointer() == 2 * ENTRY_BYTES
        assert ih.process() == []
        dev.fini()


def test_handlers_get_the_entries_of_their_source(machine):
    gpu = machine.device(GPU_BDF)
    with hal.open(f"pci:{GPU_BDF}", os=machine.os, unbind=True) as pci:
        dev, ih = bring_up(pci, gpu)
        seen = []
        ih.register(clients.SOC21_IH_CLIENTID_GRBM_CP, gfx.GFX_11_0_0__SRCID__CP_EOP_INTERRUPT, seen.append)
        gpu.ih.post(clients.SOC21_IH_CLIENTID_GRBM_CP, gfx.GFX_11_0_0__SRCID__CP_EOP_INTERRUPT, (1,))
        gpu.ih.post(clients.SOC21_IH_CLIENTID_GFX, gfx.GFX_11_0_0__SRCID__CP_EOP_INTERRUPT, (2,))
        gpu.ih.post(clients.SOC21_IH_CLIENTID_GRBM_CP, gfx.GFX_11_0_0__SRCID__CP_EOP_INTERRUPT, (3,))
        assert len(ih.process()) == 3
        assert [event.entry.src_data[0] for event in seen] == [1, 3]
        dev.fini()


def test_a_vm_fault_from_the_gmc_model_decodes_with_address_vmid_client_and_status(machine):
    gpu = machine.device(GPU_BDF)
    need_gmc(gpu)
    with hal.open(f"pci:{GPU_BDF}", os=machine.os, unbind=True) as pci:
        dev, ih = bring_up(pci, gpu)
        vmid = 5
        cntl = gpu.gmc.hubs["GC"].regs.context_cntl[vmid]
        gpu.regfile.set("GC", cntl.name, cntl.encode(RANGE_PROTECTION_FAULT_ENABLE_INTERRUPT=1))
        address = 0x7_1234_5000
        with pytest.raises(GPUVMFault):
            gpu.gmc.translate("GC", vmid, address, Access.WRITE, client_id=3)
        events = ih.process()
        assert [event.kind for event in events] == ["vm_fault"]
        fault = events[0].error
        assert isinstance(fault, VMFault)
        assert (fault.address, fault.hub, fault.vmid, fault.write) == (address, "GC", vmid, True)
        assert fault.client_id == clients.SOC21_IH_CLIENTID_GFX
        assert fault.status_fields["VMID"] == vmid
        assert fault.status_fields["MAPPING_ERROR"] == 1  # a range fault
        assert fault.status_fields["CID"] == 3
        assert "0x000712345000" in str(fault) and "GFX hub" in str(fault)
        dev.fini()


def test_sq_errors_and_ras_events_become_typed_errors(machine):
    gpu = machine.device(GPU_BDF)
    with hal.open(f"pci:{GPU_BDF}", os=machine.os, unbind=True) as pci:
        dev, ih = bring_up(pci, gpu)
        # kfd_int_process_v11.c: ERROR encoding (2) in context_id1 bits 7:6, type MEMVIOL (2)
        context0 = 2 << 21 | 0x1F << 27 | 0x1234
        context1 = 2 << 6 | 3 << 2 | 1
        gpu.ih.post(clients.SOC21_IH_CLIENTID_GRBM_CP, gfx.GFX_11_0_0__SRCID__SQ_INTERRUPT_ID,
                    (context0, context1, 0, 0), vmid=4)
        gpu.ih.post(clients.SOC21_IH_CLIENTID_GRBM_CP, gfx.GFX_11_0_0__SRCID__SQ_INTERRUPT_ID, (1, 0))
        gpu.ih.post(clients.SOC21_IH_CLIENTID_DF, 0, (9,))
        gpu.ih.post(clients.SOC21_IH_CLIENTID_GFX, gfx.GFX_11_0_0__SRCID__RLC_GC_FED_INTERRUPT)
        events = ih.process()
        assert [event.kind for event in events] == ["sq", "sq", "ras", "ras"]
        sq = events[0].error
        assert isinstance(sq, SQError)
        assert (sq.error_type, sq.detail, sq.wave, sq.wgp, sq.simd) == ("MEMVIOL", 0x1234, 0x1F, 3, 1)
        assert events[1].error is None  # the AUTO encoding reports, it is no error
        assert isinstance(events[2].error, RASError) and events[2].error.source == "UMC ECC"
        assert events[3].error.source == "RLC FED poison"
        dev.fini()


def test_overflow_skips_to_the_oldest_entry_not_written_over_and_clears_the_flag(machine):
    gpu = machine.device(GPU_BDF)
    with hal.open(f"pci:{GPU_BDF}", os=machine.os, unbind=True) as pci:
        ring_entries = 8
        dev, ih = bring_up(pci, gpu, ih_ring_size=ring_entries * ENTRY_BYTES)
        posted = 3 * ring_entries + 3
        for number in range(posted):
            assert gpu.ih.post(clients.SOC21_IH_CLIENTID_GFX, gfx.GFX_11_0_0__SRCID__CP_EOP_INTERRUPT,
                               (number,))
        events = ih.process()
        # ih_v6_0_get_wptr: resume at wptr + 32, so the ring's size less one entry survive
        assert ih.overflows == 1
        assert [event.entry.src_data[0] for event in events] == list(range(posted - ring_entries + 1,
                                                                            posted))
        assert not gpu.ih.overflow  # the driver cleared the flag
        gpu.ih.post(clients.SOC21_IH_CLIENTID_GFX, gfx.GFX_11_0_0__SRCID__CP_EOP_INTERRUPT, (99,))
        assert [event.entry.src_data[0] for event in ih.process()] == [99]
        assert ih.overflows == 1
        dev.fini()


def test_msix_delivery_wakes_a_wait(machine):
    gpu = machine.device(GPU_BDF)
    with hal.open(f"vfio:{GPU_BDF}", os=machine.os, unbind=True) as pci:
        dev, ih = bring_up(pci, gpu)
        assert ih.msix
        machine.schedule(0.05, lambda: gpu.ih.post(clients.SOC21_IH_CLIENTID_GRBM_CP,
                                                   gfx.GFX_11_0_0__SRCID__CP_EOP_INTERRUPT, (7,)))
        start = pci.os.monotonic()
        events = ih.wait("the end-of-pipe interrupt", timeout_s=5.0)
        assert pci.os.monotonic() - start < 2.0  # woken by the message, not by the deadline
        assert [event.entry.src_data[0] for event in events] == [7]
        assert gpu.ih.interrupts == 1
        # RPTR_REARM: the driver's rptr write re-armed the IH, so the next entry sends again
        machine.schedule(0.02, lambda: gpu.ih.post(clients.SOC21_IH_CLIENTID_GRBM_CP,
                                                   gfx.GFX_11_0_0__SRCID__CP_EOP_INTERRUPT, (8,)))
        assert [event.entry.src_data[0] for event in ih.wait(timeout_s=2.0)] == [8]
        assert gpu.ih.interrupts == 2
        dev.fini()
        with pytest.raises(InvalidArgument, match="no interrupts enabled"):
            pci.wait_irq(0, timeout_s=0.01)  # hw_fini handed the vector back


@pytest.mark.parametrize("backend", ["pci", "vfio"])
def test_a_wait_with_nothing_coming_times_out_naming_the_ring_and_pointers(machine, backend):
    gpu = machine.device(GPU_BDF)
    with hal.open(f"{backend}:{GPU_BDF}", os=machine.os, unbind=True) as pci:
        dev, ih = bring_up(pci, gpu, ih_timeout_s=0.05)
        gpu.ih.stalled = True  # the IH hangs: nothing reaches the ring
        gpu.ih.post(clients.SOC21_IH_CLIENTID_GFX, 0)
        start = pci.os.monotonic()
        with pytest.raises(DeviceTimeout, match=r"IH ring 0: no entry for the fence.*rptr 0x0, wptr 0x0"):
            ih.wait("the fence")
        assert pci.os.monotonic() - start < 1.0
        dev.fini()


def test_a_device_that_vanished_raises_device_lost_on_the_first_poll(machine):
    gpu = machine.device(GPU_BDF)
    with hal.open(f"pci:{GPU_BDF}", os=machine.os, unbind=True) as pci:
        dev, ih = bring_up(pci, gpu)
        gpu.vanish()
        with pytest.raises(DeviceLost):
            ih.wait("anything", timeout_s=5.0)


def test_after_hw_fini_the_ring_is_off(machine):
    gpu = machine.device(GPU_BDF)
    with hal.open(f"pci:{GPU_BDF}", os=machine.os, unbind=True) as pci:
        dev, ih = bring_up(pci, gpu)
        cntl2 = oss.regIH_CNTL2
        assert cntl2.decode(gpu.regfile.get("OSSSYS", cntl2.name))["SELF_IV_FORCE_WPTR_UPDATE_ENABLE"] == 1
        storm = oss.regIH_MSI_STORM_CTRL
        assert storm.decode(gpu.regfile.get("OSSSYS", storm.name))["DELAY"] == 3  # ih_v6_0_irq_init
        dev.fini()
        assert cntl2.decode(gpu.regfile.get("OSSSYS", cntl2.name))["SELF_IV_FORCE_WPTR_UPDATE_ENABLE"] == 0
        assert not gpu.ih.enabled
        assert not gpu.ih.post(clients.SOC21_IH_CLIENTID_GFX, 0)
        with pytest.raises(InvalidArgument, match="not enabled"):
            ih.wait()


def test_a_ring_size_that_is_no_power_of_two_is_refused(machine):
    gpu = machine.device(GPU_BDF)
    with hal.open(f"pci:{GPU_BDF}", os=machine.os, unbind=True) as pci:
        with pytest.raises(InvalidArgument, match="power of two"):
            bring_up(pci, gpu, ih_ring_size=3000)


def test_a_short_ring_entry_is_refused_not_padded():
    from drivers.am.ih import ENTRY_BYTES, IHEntry
    from hal.errors import InvalidArgument

    with pytest.raises(InvalidArgument, match=f"{ENTRY_BYTES} bytes, got 12"):
        IHEntry.decode(bytes(12))
    assert IHEntry.decode(bytes(ENTRY_BYTES)).client_id == 0
