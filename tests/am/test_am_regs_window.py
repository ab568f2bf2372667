"""Registers past BAR5 and SMN addresses through the PCIE index/data pair (NBIO 4.3's RSMU_INDEX/
RSMU_DATA), as amdgpu_device_indirect_rreg/_wreg reach them; VRAM keeps the MM_INDEX window."""
from __future__ import annotations

import pytest

import hal
from autogen.amd.regs import nbio_4_3_0
from drivers.am.device import AMDevice
from drivers.am.regs import PRE_DISCOVERY_BLOCKS, Registers
from hal.errors import DeviceLost, InvalidArgument
from mockgpu import GPU_BDF, Machine
from mockgpu.amd import smu as smu_model

GPU = f"pci:{GPU_BDF}"


@pytest.fixture
def machine(tmp_path):
    return Machine.default(lock_dir=str(tmp_path))


def far_registers(pci) -> Registers:
    """NBIO at its fixed bases and a GC whose second segment starts past the end of BAR5."""
    mmio = pci.bar(5)
    far_base = (mmio.size // 4) + 0x1000
    blocks = {"NBIO": PRE_DISCOVERY_BLOCKS["NBIO"], "GC": ((11, 0, 0), ((0x1260, far_base),))}
    return Registers(mmio, blocks)


def test_a_register_past_bar5_goes_through_rsmu_index_and_data_not_mm_index(machine):
    gpu = machine.device(GPU_BDF)
    with hal.open(GPU, os=machine.os, unbind=True) as pci:
        registers = far_registers(pci)
        scratch = registers.reg("GC", "regSCRATCH_REG1")
        assert scratch.address >= pci.bar(5).size
        gpu.regfile.strict = True
        scratch.write(0x600DF00D)
        assert gpu.regfile.peek(scratch.address) == 0x600DF00D
        assert scratch.read() == 0x600DF00D
        # the index holds the register's byte address (the SMN address); MM_INDEX was never used
        assert gpu.regfile.get("NBIO", "regBIF_BX_PF0_RSMU_INDEX") == scratch.address
        assert gpu.regfile.get("NBIO", "regBIF_BX_PF0_MM_INDEX") == 0
        # the register behind the window is an unowned plain register: strict mode names it
        names = {access.name for access in gpu.regfile.unowned}
        assert names == {gpu.regfile.name_of(scratch.address)}


def test_the_window_posts_the_index_with_a_read_back(machine, monkeypatch):
    gpu = machine.device(GPU_BDF)
    with hal.open(GPU, os=machine.os, unbind=True) as pci:
        registers = far_registers(pci)
        scratch = registers.reg("GC", "regSCRATCH_REG1")
        index = gpu.regfile.address("NBIO", "regBIF_BX_PF0_RSMU_INDEX")
        data = gpu.regfile.address("NBIO", "regBIF_BX_PF0_RSMU_DATA")
        trace = []
        read32 = gpu.regfile.read32
        write32 = gpu.regfile.write32
        monkeypatch.setattr(gpu.regfile, "read32", lambda a: trace.append(("r", a)) or read32(a))
        monkeypatch.setattr(gpu.regfile, "write32", lambda a, v: trace.append(("w", a)) or write32(a, v))
        scratch.read()
        window = [access for access in trace if access[1] in (index, data)]
        assert window == [("w", index), ("r", index), ("r", data)]
        trace.clear()
        scratch.write(5)
        window = [access for access in trace if access[1] in (index, data)]
        # amdgpu_device_indirect_wreg reads the data register back too
        assert window == [("w", index), ("r", index), ("w", data), ("r", data)]


def test_smn_addresses_reach_the_models_behind_the_window(machine):
    gpu = machine.device(GPU_BDF)
    gpu.smu.start()
    with hal.open(GPU, os=machine.os, unbind=True) as pci:
        dev = AMDevice(pci, block_order=("NBIO",))
        flags = dev.registers.smn_read(smu_model.MP1_PUBLIC | smu_model.SMN_MP1_FIRMWARE_FLAGS)
        assert smu_model.INTERRUPTS_ENABLED.decode(flags) == 1
        # a register's byte address is its SMN address: the window reads the register itself
        scratch = dev.registers.reg("GC", "regSCRATCH_REG0")
        scratch.write(0x12345678)
        assert dev.registers.smn_read(scratch.address) == 0x12345678
        dev.registers.smn_write(scratch.address, 0x9ABCDEF0)
        assert gpu.regfile.get("GC", "regSCRATCH_REG0") == 0x9ABCDEF0
        with pytest.raises(InvalidArgument, match="32-bit PCIE index"):
            dev.registers.smn_read(1 << 32)
        dev.fini()


def test_the_mock_window_reads_registers_and_not_itself(machine):
    gpu = machine.device(GPU_BDF)
    regfile = gpu.regfile
    index = regfile.address("NBIO", "regBIF_BX_PF0_RSMU_INDEX")
    data = regfile.address("NBIO", "regBIF_BX_PF0_RSMU_DATA")
    regfile.set("GC", "regSCRATCH_REG3", 0xA5A5_0003)
    regfile.write32(index, regfile.address("GC", "regSCRATCH_REG3"))
    assert regfile.read32(data) == 0xA5A5_0003
    regfile.write32(index, data)
    assert regfile.read32(data) == 0  # the window does not reach itself
    regfile.write32(data, 7)
    assert regfile.read32(index) == data


def test_a_vanished_device_is_device_lost_through_the_window(machine):
    gpu = machine.device(GPU_BDF)
    with hal.open(GPU, os=machine.os, unbind=True) as pci:
        registers = far_registers(pci)
        scratch = registers.reg("GC", "regSCRATCH_REG1")
        gpu.vanish()
        with pytest.raises(DeviceLost):
            scratch.read()


def test_vram_past_bar0_still_uses_mm_index(machine):
    gpu = machine.device(GPU_BDF)
    top = gpu.vram_size - 4096
    gpu.vram[top:top + 4] = b"\x01\x02\x03\x04"
    with hal.open(GPU, os=machine.os, unbind=True) as pci:
        dev = AMDevice(pci, block_order=("NBIO",))
        assert dev.vram.read(top, 4) == b"\x01\x02\x03\x04"
        index = gpu.regfile.get("NBIO", "regBIF_BX_PF0_MM_INDEX")
        assert nbio_4_3_0.regBIF_BX_PF0_MM_INDEX.field("MM_APER").decode(index) == 1
        dev.fini()
