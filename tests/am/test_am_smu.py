"""The AM driver's SMU 13.0.0 block and mailbox against the mock Navi31's PMFW."""
from __future__ import annotations

import errno
import threading
import time

import pytest

import hal
from autogen.amd import smu13_driver_if_v13_0_0 as drv
from autogen.amd import smu_v13_0_0_ppsmc as ppsmc
from drivers.am import smu as smu_driver
from drivers.am.device import AMConfig, AMDevice
from drivers.am.smu import SMUError, SMUMailbox, open_mailbox
from hal.errors import DeviceBusy, DeviceLost, DeviceTimeout, FirmwareError, InvalidArgument
from mockgpu import GPU_BDF, Machine
from mockgpu.amd import smu as model

GPU = f"pci:{GPU_BDF}"
SMU_ONLY = ("NBIO", "HDP", "SMU")
FAST = AMConfig(smu_timeout_s=0.05, smu_mode1_wait_s=0.02)


@pytest.fixture
def machine(tmp_path):
    return Machine.default(lock_dir=str(tmp_path))


@pytest.fixture
def gpu(machine):
    gpu = machine.device(GPU_BDF)
    gpu.smu.start()
    return gpu


@pytest.fixture
def device(machine, gpu):
    with hal.open(GPU, os=machine.os, unbind=True) as pci:
        dev = AMDevice(pci, config=FAST, block_order=SMU_ONLY)
        yield dev
        dev.fini()


def test_hw_init_reads_versions_enables_features_and_dpm_clocks(device, gpu):
    smu = device.block("SMU")
    assert smu.firmware_version == model.DEFAULT_FIRMWARE_VERSION
    assert smu.firmware_text.startswith("78.75.0")
    assert smu.driver_if_version == drv.SMU13_0_0_DRIVER_IF_VERSION
    assert gpu.smu.driver_table_address == smu.driver_table.mc_address
    assert smu.enabled_features == gpu.smu.enabled_features == \
        model.SUPPORTED_FEATURES & ~(1 << drv.FEATURE_GFXOFF_BIT)
    uclk = model.DPM_LEVELS_MHZ[drv.PPCLK_UCLK]
    assert smu.clocks["uclk"] == smu_driver.DpmClock(uclk, uclk[0], uclk[-1])
    assert set(smu.clocks) == {"gfxclk", "socclk", "uclk", "fclk"}


def test_metrics_are_decoded_and_change_over_time(device):
    smu = device.block("SMU")
    first = smu.metrics()
    time.sleep(0.3)
    second = smu.metrics()
    assert second["counter"] == first["counter"] + 1
    assert first != {**second, "counter": first["counter"]}
    for metrics in (first, second):
        assert 20 <= metrics["temperature_edge_c"] <= metrics["temperature_hotspot_c"] <= 120
        assert metrics["power_socket_w"] > 0
        assert 0 <= metrics["activity_gfx_percent"] <= 100
        assert set(metrics["clocks_mhz"]) == set(smu_driver.METRIC_CLOCKS)


def test_soft_limits_reach_the_firmware_and_bound_the_clock(device, gpu):
    smu = device.block("SMU")
    smu.set_soft_limits("gfxclk", 800, 1200)
    assert (gpu.smu.soft_min[drv.PPCLK_GFXCLK], gpu.smu.soft_max[drv.PPCLK_GFXCLK]) == (800, 1200)
    assert 800 <= smu.metrics()["clocks_mhz"]["gfxclk"] <= 1200
    with pytest.raises(SMUError, match="SetSoftMinByFreq"):
        smu.set_soft_limits("gfxclk", minimum_mhz=2000)
    with pytest.raises(InvalidArgument, match="no DPM clock"):
        smu.set_soft_limits("memclk", 1, 2)


@pytest.mark.parametrize("response, error_number", [
    (model.SMU_RESP_CMD_FAIL, errno.EIO),
    (model.SMU_RESP_CMD_UNKNOWN, errno.EOPNOTSUPP),
    (model.SMU_RESP_CMD_BAD_PREREQ, errno.EINVAL),
    (model.SMU_RESP_BUSY_OTHER, errno.EBUSY),
    (smu_driver.SMU_RESP_DEBUG_END, errno.EREMOTEIO),
])
def test_each_error_response_is_a_typed_error_naming_the_message(device, gpu, response, error_number):
    gpu.smu.error_response = response
    with pytest.raises(SMUError) as caught:
        device.block("SMU").mailbox.send(ppsmc.PPSMC_MSG_GetSmuVersion)
    error = caught.value
    assert error.smu_message == "GetSmuVersion"
    assert error.response == response
    assert error.errno == error_number
    assert error.response_name in str(error) and "GetSmuVersion" in str(error)
    assert error.response_name == smu_driver.RESPONSE_NAMES[response]


def test_a_never_answering_smu_times_out_naming_the_message_and_response(device, gpu):
    gpu.smu.hang = True
    start = time.monotonic()
    with pytest.raises(DeviceTimeout) as caught:
        device.block("SMU").mailbox.send(ppsmc.PPSMC_MSG_TestMessage, 7)
    assert time.monotonic() - start < 1.0
    text = str(caught.value)
    assert "SMU" in text and "TestMessage" in text and "C2PMSG_90" in text and "0x00000000" in text
    # the next message first waits for the unanswered one, and names it
    with pytest.raises(DeviceTimeout, match="previous message TestMessage"):
        device.block("SMU").mailbox.send(ppsmc.PPSMC_MSG_GetSmuVersion)


def test_an_all_ones_device_raises_device_lost_on_the_first_poll(device, gpu):
    gpu.vanish()
    with pytest.raises(DeviceLost):
        device.block("SMU").mailbox.send(ppsmc.PPSMC_MSG_TestMessage)
    device.hw_done.clear()  # nothing can be torn down on a vanished device
    device.sw_done.clear()


def test_hw_init_refuses_a_pmfw_that_is_not_running(machine):
    with hal.open(GPU, os=machine.os, unbind=True) as pci:
        with pytest.raises(FirmwareError, match="SMU firmware is not running"):
            AMDevice(pci, config=FAST, block_order=SMU_ONLY)


def test_a_driver_interface_mismatch_names_both_versions(machine, gpu):
    gpu.smu.driver_if_version = drv.SMU13_0_0_DRIVER_IF_VERSION + 1
    with hal.open(GPU, os=machine.os, unbind=True) as pci:
        with pytest.raises(FirmwareError) as caught:
            AMDevice(pci, config=FAST, block_order=SMU_ONLY)
    text = str(caught.value)
    assert f"{drv.SMU13_0_0_DRIVER_IF_VERSION + 1:#x}" in text
    assert f"{drv.SMU13_0_0_DRIVER_IF_VERSION:#x}" in text


def test_after_the_psp_loads_the_pmfw_the_smu_block_comes_up(machine):
    gpu = machine.device(GPU_BDF)
    assert not gpu.smu.running
    order = ("NBIO", "HDP", "GMC", "IH", "PSP", "SMU")
    with hal.open(GPU, os=machine.os, unbind=True) as pci:
        dev = AMDevice(pci, config=FAST, block_order=order)
        assert gpu.smu.running
        assert dev.block("SMU").metrics()["counter"] == 1
        dev.fini()


def test_hw_fini_frees_the_table_and_leaves_the_pmfw_running(device, gpu):
    smu = device.block("SMU")
    sent = len(gpu.smu.log)
    device.fini()
    assert len(gpu.smu.log) == sent  # amdgpu sends nothing on an ordinary unload of 13.0.0
    assert smu.driver_table is None and gpu.smu.running


def test_prepare_for_unload_sends_the_message_with_amdgpus_argument(device, gpu):
    device.block("SMU").prepare_for_unload()
    last = gpu.smu.log[-1]
    assert (last.message, last.argument, last.response) == (ppsmc.PPSMC_MSG_PrepareMp1ForUnload, 0x55,
                                                            model.SMU_RESP_OK)


def test_mode1_clears_smu_and_psp_state_and_keeps_vram(device, gpu):
    scratch = device.registers.reg("GC", "regSCRATCH_REG0")
    scratch.write(0x1234)
    device.vram_bar.write(0x3000, b"survives")
    gpu.psp.start_sos()
    device.block("SMU").mode1_reset()
    assert not gpu.smu.running and not gpu.psp.sos_alive
    assert scratch.read() == 0
    assert device.vram_bar.read(0x3000, 8) == b"survives"
    assert gpu.smu.log[-1].message == ppsmc.PPSMC_MSG_Mode1Reset
    # the config space came back (BARs, decoding) and bus mastering with it
    assert device.registers.reg("NBIO", "regRCC_DEV0_EPF0_RCC_CONFIG_MEMSIZE").read() == \
        gpu.vram_size >> 20
    assert not device.block("SMU").mailbox.firmware_running()
    device.hw_done.clear()  # the PMFW is gone: nothing of hw_init is left to undo


def test_open_mailbox_works_without_a_bring_up(machine, gpu):
    with hal.open(GPU, os=machine.os, unbind=True) as pci:
        mailbox = open_mailbox(pci)
        assert mailbox.firmware_running()
        assert mailbox.send(ppsmc.PPSMC_MSG_TestMessage, 1) == 2


def test_the_mailbox_needs_the_ownership_lock(machine, gpu):
    with hal.open(GPU, os=machine.os, unbind=True) as pci:
        registers = AMDevice(pci, block_order=()).registers

        class Unlocked:
            holds_ownership_lock = False
            bdf = pci.bdf

        with pytest.raises(InvalidArgument, match="ownership lock"):
            SMUMailbox(Unlocked(), registers)


def test_one_thread_at_a_time_uses_the_mailbox(device, monkeypatch):
    monkeypatch.setattr(smu_driver, "PROCESS_LOCK_TIMEOUT_S", 0.05)
    mailbox = device.block("SMU").mailbox
    holder = smu_driver._process_lock(device.pci.bdf)
    holder.acquire()
    try:
        outcome = []
        thread = threading.Thread(target=lambda: outcome.append(_try_send(mailbox)))
        thread.start()
        thread.join()
        assert isinstance(outcome[0], DeviceBusy)
    finally:
        holder.release()
    assert mailbox.send(ppsmc.PPSMC_MSG_TestMessage, 4) == 5


def _try_send(mailbox: SMUMailbox):
    try:
        return mailbox.send(ppsmc.PPSMC_MSG_TestMessage)
    except DeviceBusy as exc:
        return exc
