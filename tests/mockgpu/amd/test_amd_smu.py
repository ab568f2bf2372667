"""The mock SMU 13.0.0 at the register and memory layer, driven the way smu_cmn.c drives the PMFW:
clear C2PMSG_90, write the argument to C2PMSG_82 and the message to C2PMSG_66, read the answer."""
from __future__ import annotations

import time

import pytest

from autogen.amd import smu13_driver_if_v13_0_0 as drv
from autogen.amd import smu_v13_0_0_ppsmc as ppsmc
from mockgpu import GPU_BDF, Machine
from mockgpu.amd import smu as model

MC_VRAM_OFFSET = 0x100000  # where the tests put the driver table in VRAM


@pytest.fixture
def machine(tmp_path):
    return Machine.default(lock_dir=str(tmp_path))


@pytest.fixture
def gpu(machine):
    gpu = machine.device(GPU_BDF)
    gpu.smu.start()
    return gpu


def reg(gpu, name: str) -> int:
    return gpu.regfile.address("MP1", name)


def send(gpu, message: int, argument: int = 0) -> tuple[int, int]:
    """smu_cmn.c __smu_cmn_send_msg, then one read of the response: (response, result argument)."""
    regfile = gpu.regfile
    regfile.write32(reg(gpu, "regMP1_SMN_C2PMSG_90"), 0)
    regfile.write32(reg(gpu, "regMP1_SMN_C2PMSG_82"), argument)
    regfile.write32(reg(gpu, "regMP1_SMN_C2PMSG_66"), message)
    return regfile.read32(reg(gpu, "regMP1_SMN_C2PMSG_90")), regfile.read32(reg(gpu, "regMP1_SMN_C2PMSG_82"))


def fb_base(gpu) -> int:
    return gpu.regfile.get("MMHUB", "regMMMC_VM_FB_LOCATION_BASE") << model.FB_UNIT_SHIFT


def set_table_address(gpu, offset: int = MC_VRAM_OFFSET) -> None:
    address = fb_base(gpu) + offset
    assert send(gpu, ppsmc.PPSMC_MSG_SetDriverDramAddrHigh, address >> 32)[0] == model.SMU_RESP_OK
    assert send(gpu, ppsmc.PPSMC_MSG_SetDriverDramAddrLow, address & 0xFFFFFFFF)[0] == model.SMU_RESP_OK


def enable_features(gpu) -> None:
    assert send(gpu, ppsmc.PPSMC_MSG_EnableAllSmuFeatures)[0] == model.SMU_RESP_OK


def read_firmware_flags(gpu) -> int:
    """amdgpu_device.c amdgpu_device_indirect_rreg: index, read back, data."""
    index = gpu.regfile.address("NBIO", "regBIF_BX_PF0_RSMU_INDEX")
    data = gpu.regfile.address("NBIO", "regBIF_BX_PF0_RSMU_DATA")
    gpu.regfile.write32(index, model.MP1_PUBLIC | model.SMN_MP1_FIRMWARE_FLAGS)
    gpu.regfile.read32(index)
    return gpu.regfile.read32(data)


def test_before_the_psp_loads_it_the_pmfw_answers_nothing(machine):
    gpu = machine.device(GPU_BDF)
    assert not gpu.smu.running
    assert read_firmware_flags(gpu) == 0
    assert send(gpu, ppsmc.PPSMC_MSG_TestMessage) == (model.SMU_RESP_NONE, 0)
    gpu.smu.start()
    assert model.INTERRUPTS_ENABLED.decode(read_firmware_flags(gpu)) == 1


def test_version_and_test_messages(gpu):
    assert send(gpu, ppsmc.PPSMC_MSG_GetSmuVersion) == (model.SMU_RESP_OK, model.DEFAULT_FIRMWARE_VERSION)
    assert send(gpu, ppsmc.PPSMC_MSG_GetDriverIfVersion) == (model.SMU_RESP_OK,
                                                            drv.SMU13_0_0_DRIVER_IF_VERSION)
    assert send(gpu, ppsmc.PPSMC_MSG_TestMessage, 41) == (model.SMU_RESP_OK, 42)


def test_unknown_messages_and_missing_prerequisites_get_their_codes(gpu):
    assert send(gpu, ppsmc.PPSMC_Message_Count)[0] == model.SMU_RESP_CMD_UNKNOWN
    assert send(gpu, ppsmc.PPSMC_MSG_TransferTableSmu2Dram, drv.TABLE_SMU_METRICS)[0] == \
        model.SMU_RESP_CMD_BAD_PREREQ
    # the low half alone is no address: smu_v13_0_set_driver_table_location sends High first
    assert send(gpu, ppsmc.PPSMC_MSG_SetDriverDramAddrLow, 0x1000)[0] == model.SMU_RESP_CMD_BAD_PREREQ
    # clock queries need the clock's DPM running
    query = drv.PPCLK_GFXCLK << 16 | model.DPM_LEVEL_COUNT_INDEX
    assert send(gpu, ppsmc.PPSMC_MSG_GetDpmFreqByIndex, query)[0] == model.SMU_RESP_CMD_BAD_PREREQ


def test_metrics_table_goes_to_the_dram_address_in_the_real_layout_and_changes(gpu):
    set_table_address(gpu)
    enable_features(gpu)
    size = drv.SmuMetricsExternal_t.SIZE
    readings = []
    for _ in range(2):
        response, _ = send(gpu, ppsmc.PPSMC_MSG_TransferTableSmu2Dram, drv.TABLE_SMU_METRICS)
        assert response == model.SMU_RESP_OK
        data = bytes(gpu.vram[MC_VRAM_OFFSET:MC_VRAM_OFFSET + size])
        readings.append(drv.SmuMetricsExternal_t.from_bytes(data).SmuMetrics.to_dict())
        time.sleep(0.3)
    first, second = readings
    assert second["MetricsCounter"] == first["MetricsCounter"] + 1
    assert first["AvgTemperature"] != second["AvgTemperature"] or \
        first["AverageGfxActivity"] != second["AverageGfxActivity"]
    for metrics in readings:
        assert 20 <= metrics["AvgTemperature"][drv.TEMP_EDGE] <= 110
        assert metrics["AvgTemperature"][drv.TEMP_HOTSPOT] >= metrics["AvgTemperature"][drv.TEMP_EDGE]
        assert 0 < metrics["AverageSocketPower"] <= gpu.smu.ppt_limit_w
        assert 0 <= metrics["AverageGfxActivity"] <= 100
        gfx_levels = model.DPM_LEVELS_MHZ[drv.PPCLK_GFXCLK]
        assert gfx_levels[0] <= metrics["CurrClock"][drv.PPCLK_GFXCLK] <= gfx_levels[-1]
        assert metrics["CurrClock"][drv.PPCLK_UCLK] in model.DPM_LEVELS_MHZ[drv.PPCLK_UCLK]


def test_tables_round_trip_through_vram_and_bad_transfers_fail(gpu):
    set_table_address(gpu)
    config = bytes(range(drv.DriverSmuConfigExternal_t.SIZE))
    gpu.vram[MC_VRAM_OFFSET:MC_VRAM_OFFSET + len(config)] = config
    ok = model.SMU_RESP_OK
    assert send(gpu, ppsmc.PPSMC_MSG_TransferTableDram2Smu, drv.TABLE_DRIVER_SMU_CONFIG)[0] == ok
    gpu.vram[MC_VRAM_OFFSET:MC_VRAM_OFFSET + len(config)] = bytes(len(config))
    assert send(gpu, ppsmc.PPSMC_MSG_TransferTableSmu2Dram, drv.TABLE_DRIVER_SMU_CONFIG)[0] == ok
    assert bytes(gpu.vram[MC_VRAM_OFFSET:MC_VRAM_OFFSET + len(config)]) == config
    # the metrics are the firmware's to write; an unknown table id fails
    fail = model.SMU_RESP_CMD_FAIL
    assert send(gpu, ppsmc.PPSMC_MSG_TransferTableDram2Smu, drv.TABLE_SMU_METRICS)[0] == fail
    assert send(gpu, ppsmc.PPSMC_MSG_TransferTableSmu2Dram, drv.TABLE_COUNT)[0] == fail
    # an address outside the FB range the IFWI programmed fails
    outside = fb_base(gpu) + gpu.vram_size
    send(gpu, ppsmc.PPSMC_MSG_SetDriverDramAddrHigh, outside >> 32)
    send(gpu, ppsmc.PPSMC_MSG_SetDriverDramAddrLow, outside & 0xFFFFFFFF)
    assert send(gpu, ppsmc.PPSMC_MSG_TransferTableSmu2Dram, drv.TABLE_SMU_METRICS)[0] == fail


def test_features_follow_the_allowed_mask_and_dpm_answers_levels(gpu):
    allowed = (1 << drv.FEATURE_DPM_GFXCLK_BIT) | (1 << drv.FEATURE_DPM_UCLK_BIT) | (1 << 40)
    assert send(gpu, ppsmc.PPSMC_MSG_SetAllowedFeaturesMaskHigh, allowed >> 32)[0] == model.SMU_RESP_OK
    assert send(gpu, ppsmc.PPSMC_MSG_SetAllowedFeaturesMaskLow, allowed & 0xFFFFFFFF)[0] == model.SMU_RESP_OK
    enable_features(gpu)
    low = send(gpu, ppsmc.PPSMC_MSG_GetRunningSmuFeaturesLow)[1]
    high = send(gpu, ppsmc.PPSMC_MSG_GetRunningSmuFeaturesHigh)[1]
    assert high << 32 | low == allowed
    uclk = drv.PPCLK_UCLK << 16
    levels = model.DPM_LEVELS_MHZ[drv.PPCLK_UCLK]
    assert send(gpu, ppsmc.PPSMC_MSG_GetDpmFreqByIndex, uclk | 0xFF) == (model.SMU_RESP_OK, len(levels))
    assert [send(gpu, ppsmc.PPSMC_MSG_GetDpmFreqByIndex, uclk | i)[1] for i in range(len(levels))] == \
        list(levels)
    assert send(gpu, ppsmc.PPSMC_MSG_GetDpmFreqByIndex, uclk | len(levels))[0] == model.SMU_RESP_CMD_FAIL
    assert send(gpu, ppsmc.PPSMC_MSG_GetMinDpmFreq, uclk) == (model.SMU_RESP_OK, levels[0])
    assert send(gpu, ppsmc.PPSMC_MSG_GetMaxDpmFreq, uclk) == (model.SMU_RESP_OK, levels[-1])
    # SOCCLK's DPM was not allowed
    socclk = drv.PPCLK_SOCCLK << 16
    assert send(gpu, ppsmc.PPSMC_MSG_GetMaxDpmFreq, socclk)[0] == model.SMU_RESP_CMD_BAD_PREREQ
    assert send(gpu, ppsmc.PPSMC_MSG_GetMaxDpmFreq, drv.PPCLK_COUNT << 16)[0] == model.SMU_RESP_CMD_FAIL


def test_soft_limits_bound_the_reported_clocks(gpu):
    enable_features(gpu)
    gfx = drv.PPCLK_GFXCLK << 16
    assert send(gpu, ppsmc.PPSMC_MSG_SetSoftMaxByFreq, gfx | 1000)[0] == model.SMU_RESP_OK
    assert send(gpu, ppsmc.PPSMC_MSG_SetSoftMinByFreq, gfx | 900)[0] == model.SMU_RESP_OK
    for _ in range(5):
        assert 900 <= gpu.smu.metrics().CurrClock[drv.PPCLK_GFXCLK] <= 1000
        time.sleep(0.05)
    # a minimum above the maximum is refused; a maximum past the top is clamped to it
    assert send(gpu, ppsmc.PPSMC_MSG_SetSoftMinByFreq, gfx | 1100)[0] == model.SMU_RESP_CMD_FAIL
    assert send(gpu, ppsmc.PPSMC_MSG_SetSoftMaxByFreq, gfx | 0xFFFF)[0] == model.SMU_RESP_OK
    assert gpu.smu.soft_max[drv.PPCLK_GFXCLK] == model.DPM_LEVELS_MHZ[drv.PPCLK_GFXCLK][-1]


def test_a_message_in_flight_reads_busy_and_a_second_one_is_rejected(gpu):
    gpu.smu.response_delay_s = 0.05
    assert send(gpu, ppsmc.PPSMC_MSG_TestMessage, 1)[0] == model.SMU_RESP_NONE
    assert send(gpu, ppsmc.PPSMC_MSG_GetSmuVersion)[0] == model.SMU_RESP_BUSY_OTHER
    assert [m.response for m in gpu.smu.log[-2:]] == [model.SMU_RESP_OK, model.SMU_RESP_BUSY_OTHER]
    assert send(gpu, ppsmc.PPSMC_MSG_TestMessage, 1)[0] == model.SMU_RESP_NONE
    time.sleep(0.06)
    response = gpu.regfile.read32(reg(gpu, "regMP1_SMN_C2PMSG_90"))
    assert (response, gpu.regfile.read32(reg(gpu, "regMP1_SMN_C2PMSG_82"))) == (model.SMU_RESP_OK, 2)


def test_fault_hooks_hang_and_error_answers(gpu):
    gpu.smu.hang = True
    assert send(gpu, ppsmc.PPSMC_MSG_TestMessage)[0] == model.SMU_RESP_NONE
    gpu.smu.hang = False
    gpu.smu.error_response = model.SMU_RESP_CMD_FAIL
    assert send(gpu, ppsmc.PPSMC_MSG_GetSmuVersion)[0] == model.SMU_RESP_CMD_FAIL


def test_mode1_through_the_mailbox_clears_psp_and_smu_and_keeps_vram(machine, gpu):
    scratch = gpu.regfile.address("GC", "regSCRATCH_REG0")
    gpu.regfile.write32(scratch, 0xCAFE)
    gpu.vram[0x2000:0x2004] = b"keep"
    gpu.psp.start_sos()
    set_table_address(gpu)
    resets = gpu.state.reset_count
    assert send(gpu, ppsmc.PPSMC_MSG_Mode1Reset)[0] == model.SMU_RESP_OK
    assert gpu.smu.running  # the reset comes mode1_delay_s after the answer
    machine.os.sleep(gpu.smu.mode1_delay_s * 2)
    assert gpu.state.reset_count == resets + 1
    assert not gpu.smu.running and gpu.smu.driver_table_address is None
    assert not gpu.psp.sos_alive
    assert gpu.regfile.read32(scratch) == 0
    assert bytes(gpu.vram[0x2000:0x2004]) == b"keep"


def test_mode1_ras_flag_needs_pmfw_78_77_and_other_arguments_fail(machine, gpu):
    assert send(gpu, ppsmc.PPSMC_MSG_Mode1Reset, model.MODE1_RAS_FATAL_FLAG)[0] == model.SMU_RESP_CMD_FAIL
    assert send(gpu, ppsmc.PPSMC_MSG_Mode1Reset, 1)[0] == model.SMU_RESP_CMD_FAIL
    gpu.smu.firmware_version = model.MODE1_RAS_FATAL_MIN_VERSION
    assert send(gpu, ppsmc.PPSMC_MSG_Mode1Reset, model.MODE1_RAS_FATAL_FLAG)[0] == model.SMU_RESP_OK
    machine.os.sleep(gpu.smu.mode1_delay_s * 2)
    assert not gpu.smu.running


def test_the_debug_mailbox_has_no_mode1_on_13_0_0(machine, gpu):
    regfile = gpu.regfile
    # smu_cmn.c __smu_cmn_send_debug_msg: argument, message, then the response cleared
    regfile.write32(reg(gpu, "regMP1_SMN_C2PMSG_53"), 0)
    regfile.write32(reg(gpu, "regMP1_SMN_C2PMSG_75"), ppsmc.DEBUGSMC_MSG_GetDebugData)
    regfile.write32(reg(gpu, "regMP1_SMN_C2PMSG_54"), 0)
    assert regfile.read32(reg(gpu, "regMP1_SMN_C2PMSG_54")) == model.SMU_RESP_OK
    regfile.write32(reg(gpu, "regMP1_SMN_C2PMSG_75"), ppsmc.DEBUGSMC_Message_Count)
    regfile.write32(reg(gpu, "regMP1_SMN_C2PMSG_54"), 0)
    assert regfile.read32(reg(gpu, "regMP1_SMN_C2PMSG_54")) == model.SMU_RESP_CMD_UNKNOWN
    machine.os.sleep(0.02)
    assert gpu.smu.running


def test_a_pci_reset_keeps_the_pmfw_running(machine, gpu):
    set_table_address(gpu)
    gpu.function_level_reset()
    assert gpu.smu.running and gpu.smu.driver_table_address is not None
    assert send(gpu, ppsmc.PPSMC_MSG_GetSmuVersion)[0] == model.SMU_RESP_OK


def test_prepare_for_unload_turns_the_features_off(gpu):
    enable_features(gpu)
    assert send(gpu, ppsmc.PPSMC_MSG_PrepareMp1ForUnload, 0x55)[0] == model.SMU_RESP_OK
    assert gpu.smu.enabled_features == 0 and gpu.smu.prepared_for_unload
