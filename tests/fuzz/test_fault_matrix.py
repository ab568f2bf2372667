"""Fault injection (mockgpu.faults) and the fault matrix (tools.fault_matrix): each fault against its
key operation with the typed error the driver must give and the recovery after it, a hang caught by
the watchdog, stray writes recorded by the machine, and the whole matrix as its spec says."""
from __future__ import annotations

import os

import pytest

from autogen.amd import psp_gfx_if as gfx
from hal.os import PAGE_SIZE
from mockgpu import GPU_BDF, Machine
from mockgpu.faults import FAULTS, FaultPlan, Trigger
from mockgpu.navi31 import NAVI31_BAR5_SIZE
from tools import fault_matrix
from tools.fault_matrix import EXPECTED, OPERATIONS, run_case, run_matrix

TIMEOUT_S = 0.3

# each fault against the operation it matters most to, with a word its error must carry
KEY_CASES = [
    ("surprise_removal", "sdma_copy", "stopped answering"),
    ("mailbox_silent", "cold_boot", "C2PMSG_35"),
    ("mailbox_error", "warm_attach", "SMU_RESP_CMD_FAIL"),
    ("ring_stall", "kernel_launch", "CP_HQD_PQ_RPTR"),
    ("dropped_writes", "sdma_copy", "did not reach"),
    ("iommu_fault", "sdma_copy", "COPY"),
    ("vm_fault", "kernel_launch", "fault"),
    ("ras_interrupt", "signal_wait", "UMC ECC"),
    ("firmware_rejected", "cold_boot", "TEE_ERROR_NOT_SUPPORTED"),
    ("slow_device", "kernel_launch", ""),
    ("slow_device_timeout", "sdma_copy", "did not reach"),
]


def test_every_fault_has_a_key_case_and_every_cell_a_spec():
    assert sorted(fault for fault, _, _ in KEY_CASES) == sorted(FAULTS)
    assert set(EXPECTED) == {(fault, operation) for fault in FAULTS for operation in OPERATIONS}


@pytest.mark.parametrize("fault,operation,word", KEY_CASES, ids=[f"{f}-{o}" for f, o, _ in KEY_CASES])
def test_each_fault_gives_its_typed_outcome_and_the_device_recovers(fault, operation, word):
    outcome = run_case(fault, operation, timeout_s=TIMEOUT_S)
    assert outcome.passed, outcome.to_json()
    assert outcome.result == EXPECTED[(fault, operation)].result
    assert word in outcome.detail
    if outcome.result.startswith("typed:"):
        # typed within the budget: a few timeouts at most, not the watchdog's
        assert outcome.seconds < fault_matrix.HANG_FACTOR * TIMEOUT_S + 1.5
    assert outcome.recovered is True, outcome.detail
    if fault == "surprise_removal":
        assert "stays DeviceLost until the hot plug" in outcome.detail


def test_a_driver_waiting_forever_is_classified_as_a_hang_and_stopped():
    # the PSP never answers and the driver's timeouts are 1000 s: only the watchdog ends it
    outcome = run_case("mailbox_silent", "cold_boot", timeout_s=1000.0, watchdog_s=0.4)
    assert outcome.result == "hang"
    assert not outcome.passed and outcome.recovered is None
    assert outcome.seconds < 2.0
    assert "pulled off the bus" in outcome.detail


def test_a_cell_whose_device_writes_outside_dma_memory_is_a_stray_write(monkeypatch):
    # an operation whose GPU writes a page the program never set aside for DMA (a driver that
    # handed the engine a wrong address): the machine records it and the cell says so
    def stray_copy(case):
        dev = case.device = case.open()
        gpu = case.machine.device(GPU_BDF)
        unlocked = case.machine.ram.allocate(PAGE_SIZE)

        def operation():
            assert gpu.dma_write(unlocked.pfns[0] * PAGE_SIZE, b"\xAA" * 64)
            dev.synchronize()
        return operation

    monkeypatch.setattr(fault_matrix._Case, "_setup_sdma_copy", stray_copy)
    outcome = run_case("slow_device", "sdma_copy", timeout_s=TIMEOUT_S)
    assert outcome.result == "stray_write" and not outcome.passed
    assert "stray dma_write" in outcome.detail and "not locked" in outcome.detail


def test_the_machine_records_dma_writes_outside_dma_memory_and_cpu_accesses_past_a_bar():
    machine = Machine.default()
    gpu = machine.device(GPU_BDF)
    dma = machine.os.alloc_locked(2 * PAGE_SIZE)
    bus = machine.os.pagemap(dma)
    assert gpu.dma_write(bus[1], b"\x01" * 16)  # locked and its address read: DMA memory
    assert machine.stray_accesses == []
    hidden = machine.ram.allocate(PAGE_SIZE, lock=True)  # locked, address never read from pagemap
    assert gpu.dma_write(hidden.pfns[0] * PAGE_SIZE, b"\x02" * 8)
    unlocked = machine.os.alloc_pages(PAGE_SIZE)
    assert gpu.dma_write(machine.os.pagemap(unlocked)[0], b"\x03" * 8)
    assert not gpu.dma_write(1 << 30, b"\x04" * 8)  # no RAM there (the write is lost too)
    reasons = [access.reason for access in machine.stray_writes]
    assert [access.kind for access in machine.stray_writes] == ["dma_write"] * 3
    assert "never read from pagemap" in reasons[0]
    assert "not locked" in reasons[1]
    assert "not RAM" in reasons[2]
    past = gpu.bar_region(5, 2 * NAVI31_BAR5_SIZE)  # a mapping larger than the BAR decodes
    assert past.read32(NAVI31_BAR5_SIZE) == 0xFFFFFFFF
    past.write32(NAVI31_BAR5_SIZE + 4, 1)
    assert [access.kind for access in machine.stray_accesses[3:]] == ["cpu_read", "cpu_write"]
    assert len(machine.stray_writes) == 4  # a read is no write


def test_triggers_fire_at_the_counted_access_and_disarm_undoes_the_fault():
    machine = Machine.default()
    gpu = machine.device(GPU_BDF)
    plan = FaultPlan(machine)
    fault = plan.arm("firmware_rejected", Trigger.after_mmio(3))
    region = gpu.bar_region(5)
    region.read32(0)
    region.read32(0)
    assert not fault.fired and gfx.GFX_CMD_ID_LOAD_IP_FW not in gpu.psp.fail_commands
    region.read32(0)
    assert fault.fired and fault.state == "active"
    assert gpu.psp.fail_commands[gfx.GFX_CMD_ID_LOAD_IP_FW] == gfx.TEE_ERROR_NOT_SUPPORTED
    assert gpu.mmio_observer is None  # nothing left to count
    fault.disarm()
    assert gfx.GFX_CMD_ID_LOAD_IP_FW not in gpu.psp.fail_commands
    stall = plan.arm("ring_stall", Trigger.at_time(0.0), target="sdma")
    machine.run_due_events()
    assert stall.fired and gpu.sdma.stalled and not gpu.mec.stalled
    plan.clear()
    assert not gpu.sdma.stalled and plan.faults == []
    removal = plan.arm("surprise_removal")
    assert not gpu.responds()
    removal.disarm()  # the hot plug: pciehp removes and enumerates the slot again
    assert gpu.responds() and GPU_BDF in machine.functions
    with pytest.raises(ValueError):
        plan.arm("mailbox_silent", target="gmc")
    with pytest.raises(ValueError):
        plan.arm("no_such_fault")


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("GPUHAL_SLOW_TESTS") != "1",
                    reason="the whole matrix takes about a minute: .ci/run runs it as "
                           "`python -m tools.fault_matrix`; set GPUHAL_SLOW_TESTS=1 to run it here")
def test_the_whole_fault_matrix_matches_its_spec():
    outcomes = run_matrix(timeout_s=TIMEOUT_S)
    failed = [outcome.to_json() for outcome in outcomes if not outcome.passed]
    assert not failed, fault_matrix.table(outcomes)
    assert len(outcomes) == len(FAULTS) * len(OPERATIONS)
