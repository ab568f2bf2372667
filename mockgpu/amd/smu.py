"""The SMU 13.0.0 (MP1, the power management firmware "PMFW") of the mock Navi31, from the firmware's side.

Mailbox (smu_v13_0_0_ppt.c smu_v13_0_0_set_smu_mailbox_registers; smu_cmn.c __smu_cmn_send_msg):
the driver clears the response register MP1 C2PMSG_90, writes the argument to C2PMSG_82 and the
message id (smu_v13_0_0_ppsmc.h PPSMC_MSG_*) to C2PMSG_66; the firmware runs the message, puts its
result in C2PMSG_82 and a response code in C2PMSG_90 (smu_cmn.c SMU_RESP_*: 1 OK, 0xFF failed,
0xFE unknown command, 0xFD bad prerequisites, 0xFC busy; ppsmc.h PPSMC_Result_* has the same values).
A response of 0 means "still busy". The debug mailbox (C2PMSG_75 message, C2PMSG_53 argument,
C2PMSG_54 response) serves the DEBUGSMC_MSG_* ids of smu_v13_0_0_ppsmc.h.

The model answers when the message register is written (or `response_delay_s` later, seen by the
next read of the response register); while a message is in flight a second message write is not
taken: the first completes and the response reads BUSY_OTHER (the model's reading of smu_cmn.c's
"0xFC, the command was rejected as the SMU is busy").

The firmware runs only once loaded (`start()`: the PSP's LOAD_IP_FW of the SMC image on real
hardware; amdgpu_psp.c psp_load_smu_fw); it then sets MP1_FIRMWARE_FLAGS.INTERRUPTS_ENABLED, which
amdgpu reads through SMN (smu_v13_0.c smu_v13_0_check_fw_status). Before that nobody answers.

State: the driver table address (SetDriverDramAddrHigh/Low), tables copied to and from VRAM at that
MC address (TransferTableSmu2Dram / Dram2Smu, table id in bits 15:0, smu_cmn.c
smu_cmn_update_table), allowed and enabled features, DPM levels per clock (PPCLK_*), soft limits
that bound the clocks the metrics table reports, and a metrics table (SmuMetricsExternal_t) whose
temperatures, power, clocks and activity change with time.

Mode1 (soc21.c soc21_asic_mode1_reset / amdgpu_device.c amdgpu_device_mode1_reset): on MP1 13.0.0
the request is PPSMC_MSG_Mode1Reset on the normal mailbox, argument 0, or 1 << 16 ("RAS fatal
error") from PMFW 78.77 on (smu_v13_0_0_ppt.c smu_v13_0_0_mode1_reset). The debug mailbox path is
13.0.10's (DEBUGSMC_MSG_Mode1Reset 2 there; 13.0.0's id 2 is DEBUGSMC_MSG_GetDebugData), and
psp_v13_0.c has no mode1_reset hook (amdgpu_psp.c psp_gpu_reset does nothing on it), so those are
not mode1 requests here. The reset happens `mode1_delay_s` after the answer, through
`gpu.mode1_reset()`.

Fault hooks: `hang` (messages are never answered; `resume()` ends it: the PMFW then runs the message
left in C2PMSG_66 if C2PMSG_90 still reads 0, as its mailbox poll would), `error_response` (every
message is answered with that code and not run), `response_delay_s`, and the GPU's `vanish()`.
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import TYPE_CHECKING, Callable

from autogen.amd import smu13_driver_if_v13_0_0 as drv
from autogen.amd import smu_v13_0_0_ppsmc as ppsmc
from autogen.amd.regs import mp_13_0_0

if TYPE_CHECKING:
    from mockgpu.amd.gpu import Navi31GPU

# smu_cmn.c SMU_RESP_*: the response codes in C2PMSG_90 (same values as ppsmc.h PPSMC_Result_*)
SMU_RESP_NONE = 0
SMU_RESP_OK = ppsmc.PPSMC_Result_OK
SMU_RESP_CMD_FAIL = ppsmc.PPSMC_Result_Failed
SMU_RESP_CMD_UNKNOWN = ppsmc.PPSMC_Result_UnknownCmd
SMU_RESP_CMD_BAD_PREREQ = ppsmc.PPSMC_Result_CmdRejectedPrereq
SMU_RESP_BUSY_OTHER = ppsmc.PPSMC_Result_CmdRejectedBusy

# smu_v13_0.h: MP1_Public 0x03b00000 | smnMP1_FIRMWARE_FLAGS 0x3010024, read through the RSMU window
MP1_PUBLIC = 0x03B00000
SMN_MP1_FIRMWARE_FLAGS = 0x3010024
FIRMWARE_FLAGS_ADDRESS = MP1_PUBLIC | SMN_MP1_FIRMWARE_FLAGS
INTERRUPTS_ENABLED = mp_13_0_0.regMP1_FIRMWARE_FLAGS.field("INTERRUPTS_ENABLED")

# the PMFW version of firmware-amd-graphics 20230210-5's smu_13_0_0.bin (its header's ucode_version:
# 78.75.0); GetSmuVersion answers it as program << 24 | major << 16 | minor << 8 | debug
DEFAULT_FIRMWARE_VERSION = 0x004E4B00
# smu_v13_0_0_ppt.c smu_v13_0_0_mode1_reset: PMFW 78.77 and later take the RAS fatal flag (bit 16)
MODE1_RAS_FATAL_FLAG = 1 << 16
MODE1_RAS_FATAL_MIN_VERSION = 0x004E4D00
# smu_v13_0.h SMU13_MODE1_RESET_WAIT_TIME_IN_MS is 500 ms; the model resets sooner so tests are fast
DEFAULT_MODE1_DELAY_S = 0.005
# smu_v13_0.c smu_v13_0_get_dpm_freq_by_index: index 0xff asks for the number of levels
DPM_LEVEL_COUNT_INDEX = 0xFF
CLOCK_ID_SHIFT = 16  # smu_v13_0.c: every clock message carries the PPCLK id in bits 31:16
LOW_HALF = 0xFFFF
TABLE_ID_MASK = 0xFFFF  # smu_cmn.c smu_cmn_update_table: table_id | (argument & 0xFFFF) << 16
WORD = 0xFFFFFFFF
# smu_v13_0_0_ppt.c MP0_MP1_DATA_REGION_SIZE_COMBOPPTABLE: the combo pptable's size
COMBO_PPTABLE_SIZE = 0x4000
FB_UNIT_SHIFT = 24  # mmhub_v3_0.c mmhub_v3_0_get_fb_location: FB_LOCATION_BASE/TOP in 16 MiB units

# bytes each table id moves (the *External_t structs smu_v13_0_0_ppt.c smu_v13_0_0_tables_init sizes)
TABLE_SIZES = {
    drv.TABLE_PPTABLE: drv.PPTable_t.SIZE,
    drv.TABLE_COMBO_PPTABLE: COMBO_PPTABLE_SIZE,
    drv.TABLE_WATERMARKS: drv.WatermarksExternal_t.SIZE,
    drv.TABLE_AVFS_PSM_DEBUG: drv.AvfsDebugTableExternal_t.SIZE,
    drv.TABLE_SMU_METRICS: drv.SmuMetricsExternal_t.SIZE,
    drv.TABLE_DRIVER_SMU_CONFIG: drv.DriverSmuConfigExternal_t.SIZE,
    drv.TABLE_ACTIVITY_MONITOR_COEFF: drv.DpmActivityMonitorCoeffIntExternal_t.SIZE,
    drv.TABLE_OVERDRIVE: drv.OverDriveTableExternal_t.SIZE,
    drv.TABLE_I2C_COMMANDS: drv.SwI2cRequestExternal_t.SIZE,
    drv.TABLE_DRIVER_INFO: drv.DriverInfoTable_t.SIZE,
    drv.TABLE_ECCINFO: drv.EccInfoTable_t.SIZE,
}
# tables the firmware only reports (a Dram2Smu of one is refused with CMD_FAIL: the model's choice)
READ_ONLY_TABLES = frozenset({drv.TABLE_SMU_METRICS, drv.TABLE_ECCINFO, drv.TABLE_AVFS_PSM_DEBUG})

# The model's DPM levels in MHz, plausible for an RX 7900 XTX (model data, not read from a part):
# GFXCLK is fine-grained (two levels: min and max), the others discrete.
DPM_LEVELS_MHZ: dict[int, tuple[int, ...]] = {
    drv.PPCLK_GFXCLK: (500, 2500),
    drv.PPCLK_SOCCLK: (500, 960, 1200),
    drv.PPCLK_UCLK: (96, 456, 772, 1249),
    drv.PPCLK_FCLK: (400, 800, 1500, 1900),
    drv.PPCLK_DCLK_0: (500, 1200),
    drv.PPCLK_VCLK_0: (500, 1200),
    drv.PPCLK_DCLK_1: (500, 1200),
    drv.PPCLK_VCLK_1: (500, 1200),
    drv.PPCLK_DISPCLK: (600,),
    drv.PPCLK_DPPCLK: (600,),
    drv.PPCLK_DPREFCLK: (600,),
    drv.PPCLK_DCFCLK: (500, 1100),
    drv.PPCLK_DTBCLK: (600,),
}
# the DPM feature that must run before a clock's levels can be asked for or limited
# (smu_v13_0_0_ppt.c SMC_DPM_FEATURE and the FEA_MAP of the clocks; smu_cmn_clk_dpm_is_enabled)
CLOCK_FEATURE: dict[int, int] = {
    drv.PPCLK_GFXCLK: drv.FEATURE_DPM_GFXCLK_BIT,
    drv.PPCLK_SOCCLK: drv.FEATURE_DPM_SOCCLK_BIT,
    drv.PPCLK_UCLK: drv.FEATURE_DPM_UCLK_BIT,
    drv.PPCLK_FCLK: drv.FEATURE_DPM_FCLK_BIT,
    drv.PPCLK_DCLK_0: drv.FEATURE_MM_DPM_BIT,
    drv.PPCLK_VCLK_0: drv.FEATURE_MM_DPM_BIT,
    drv.PPCLK_DCLK_1: drv.FEATURE_MM_DPM_BIT,
    drv.PPCLK_VCLK_1: drv.FEATURE_MM_DPM_BIT,
    drv.PPCLK_DISPCLK: drv.FEATURE_DPM_DCN_BIT,
    drv.PPCLK_DPPCLK: drv.FEATURE_DPM_DCN_BIT,
    drv.PPCLK_DPREFCLK: drv.FEATURE_DPM_DCN_BIT,
    drv.PPCLK_DCFCLK: drv.FEATURE_DPM_DCN_BIT,
    drv.PPCLK_DTBCLK: drv.FEATURE_DPM_DCN_BIT,
}
# the features this firmware can run (its pptable's FeaturesToRun): every named one up to SOC_PCC
SUPPORTED_FEATURES = (1 << (drv.FEATURE_SOC_PCC_BIT + 1)) - 1
# messages the model takes and answers OK without modelling their effect
ACCEPTED_WITHOUT_EFFECT = frozenset({
    ppsmc.PPSMC_MSG_SetToolsDramAddrHigh, ppsmc.PPSMC_MSG_SetToolsDramAddrLow,
    ppsmc.PPSMC_MSG_DramLogSetDramAddrHigh, ppsmc.PPSMC_MSG_DramLogSetDramAddrLow,
    ppsmc.PPSMC_MSG_DramLogSetDramSize, ppsmc.PPSMC_MSG_OverridePcieParameters,
    ppsmc.PPSMC_MSG_NotifyPowerSource, ppsmc.PPSMC_MSG_SetWorkloadMask, ppsmc.PPSMC_MSG_AllowGfxOff,
    ppsmc.PPSMC_MSG_DisallowGfxOff, ppsmc.PPSMC_MSG_PowerUpVcn, ppsmc.PPSMC_MSG_PowerDownVcn,
    ppsmc.PPSMC_MSG_PowerUpJpeg, ppsmc.PPSMC_MSG_PowerDownJpeg, ppsmc.PPSMC_MSG_AllowIHHostInterrupt,
    ppsmc.PPSMC_MSG_DALNotPresent, ppsmc.PPSMC_MSG_SetExternalClientDfCstateAllow,
    ppsmc.PPSMC_MSG_SetGpoAllow, ppsmc.PPSMC_MSG_ReenableAcDcInterrupt, ppsmc.PPSMC_MSG_RunDcBtc,
    ppsmc.PPSMC_MSG_SetHardMinByFreq, ppsmc.PPSMC_MSG_SetHardMaxByFreq, ppsmc.PPSMC_MSG_EnableUCLKShadow,
    ppsmc.PPSMC_MSG_SetMGpuFanBoostLimitRpm,
})
# the model's board: socket power limit (W) GetPptLimit answers until SetPptLimit changes it
DEFAULT_PPT_LIMIT_W = 355
# the model's idle temperature (degrees C) and idle socket power (W) around which the metrics move
IDLE_TEMPERATURE_C = 40
IDLE_POWER_W = 30
# model data for the metrics: how far each sensor runs above the edge, heating at full load, a
# ripple, the fan intake, and the fan's idle and full duty and speed per percent of load
TEMPERATURE_ABOVE_EDGE_C = {drv.TEMP_EDGE: 0, drv.TEMP_HOTSPOT: 12, drv.TEMP_MEM: 8, drv.TEMP_VR_GFX: 5,
                            drv.TEMP_VR_SOC: 3}
LOAD_HEATING_C = 40
RIPPLE_C = 2
INTAKE_TEMPERATURE_C = 30
FAN_IDLE_PWM = 20
FAN_FULL_PWM = 100
FAN_IDLE_RPM = 600
FAN_RPM_PER_ACTIVITY = 20
ACTIVITY_PERIOD_S = 4.0  # one load cycle of the synthetic activity (0 -> 100 -> 0 %)
BUSY_ACTIVITY = 15  # smu_v13_0_0_ppt.c SMU_13_0_0_BUSY_THRESHOLD
# metrics fields of the model's PCIe link (PcieRate is the gen index, 3 = gen4; PcieWidth 6 = x16,
# the encodings smu_v13_0_0_ppt.c smu_v13_0_0_update_pcie_parameters uses)
PCIE_RATE_GEN4 = 3
PCIE_WIDTH_X16 = 6
RESET_KINDS = ("power_on", "pci", "mode1")


@dataclasses.dataclass
class Message:
    """One message the model took: id, argument, the response code and the result argument."""

    message: int
    argument: int
    response: int = SMU_RESP_NONE
    result: int = 0


class SMUModel:
    """MP1 running SMU 13.0.0 firmware behind the C2PMSG mailbox (see the module docstring)."""

    def __init__(self, gpu: "Navi31GPU", *, firmware_version: int = DEFAULT_FIRMWARE_VERSION,
                 driver_if_version: int = drv.SMU13_0_0_DRIVER_IF_VERSION,
                 running_at_power_on: bool = False) -> None:
        self.gpu = gpu
        self.firmware_version = firmware_version
        self.driver_if_version = driver_if_version
        self.running_at_power_on = running_at_power_on
        self.response_delay_s = 0.0
        self.mode1_delay_s = DEFAULT_MODE1_DELAY_S
        self.hang = False
        self.error_response: int | None = None
        self.log: list[Message] = []
        self.on_mode1: Callable[[], None] | None = None
        regfile = gpu.regfile
        self._message_address = regfile.own("MP1", "regMP1_SMN_C2PMSG_66", write=self._message_write)
        self._argument_address = regfile.own("MP1", "regMP1_SMN_C2PMSG_82")
        self._response_address = regfile.own("MP1", "regMP1_SMN_C2PMSG_90", read=self._response_read)
        regfile.own("MP1", "regMP1_SMN_C2PMSG_75", write=self._debug_message_write)
        self._debug_argument_address = regfile.own("MP1", "regMP1_SMN_C2PMSG_53")
        self._debug_response_address = regfile.own("MP1", "regMP1_SMN_C2PMSG_54",
                                                    write=self._debug_response_write)
        gpu.smn.own(FIRMWARE_FLAGS_ADDRESS, read=self._firmware_flags, write=lambda value: None)
        self._handlers = self._message_handlers()
        self.reset("power_on")

    # -- life cycle --------------------------------------------------------------------------------
    def reset(self, kind: str) -> None:
        """power_on and mode1: the PMFW is gone until the PSP loads it again (amdgpu reloads it
        through psp_load_smu_fw after a mode1 reset) and every table, limit and feature with it.
        pci (FLR, bus reset): what a PCIe reset does to MP1 is not documented in amdgpu; the model
        keeps the firmware running and its state."""
        if kind not in RESET_KINDS:
            raise ValueError(f"unknown reset kind {kind!r} (kinds: {', '.join(RESET_KINDS)})")
        if kind == "pci":
            self._pending = None
            if self.running:
                self.gpu.regfile.poke(self._response_address, SMU_RESP_OK)  # idle, as after start()
            return
        self.running = False
        self._pending: tuple[Message, float] | None = None
        self._debug_pending: int | None = None
        self._taken_while_hung: int | None = None  # the message written while hung (`resume`)
        self.driver_table_high: int | None = None
        self.driver_table_address: int | None = None
        self.allowed_features: int | None = None
        self.enabled_features = 0
        self.ppt_limit_w = DEFAULT_PPT_LIMIT_W
        self.prepared_for_unload = False
        self.soft_min = {clock: levels[0] for clock, levels in DPM_LEVELS_MHZ.items()}
        self.soft_max = {clock: levels[-1] for clock, levels in DPM_LEVELS_MHZ.items()}
        self.tables = {table: bytearray(size) for table, size in TABLE_SIZES.items()}
        pptable = drv.PPTable_t.from_buffer(self.tables[drv.TABLE_PPTABLE])
        pptable.SkuTable.Version = drv.PPTABLE_VERSION
        pptable.SkuTable.FeaturesToRun[0] = SUPPORTED_FEATURES & WORD
        pptable.SkuTable.FeaturesToRun[1] = SUPPORTED_FEATURES >> 32
        self.metrics_counter = 0
        self.energy = 0
        self.started_at = time.monotonic()
        if kind == "power_on" and self.running_at_power_on:
            self.start()

    def resume(self) -> None:
        """The end of a `hang` (see the module docstring)."""
        self.hang = False
        message = self._taken_while_hung
        self._taken_while_hung = None
        if message is not None and self.gpu.regfile.peek(self._response_address) == SMU_RESP_NONE:
            self._message_write(message)

    def start(self, firmware_version: int | None = None) -> None:
        """The PMFW starts (loaded by the PSP): the mailbox answers from now on."""
        if firmware_version is not None:
            self.firmware_version = firmware_version
        self.running = True
        self.started_at = time.monotonic()
        # the response register reads OK once the firmware is up and idle (amdgpu ignores it:
        # smu_cmn.c SMU_FW_INIT skips the first poll)
        self.gpu.regfile.poke(self._response_address, SMU_RESP_OK)

    def _firmware_flags(self) -> int:
        return INTERRUPTS_ENABLED.encode(1) if self.running else 0

    # -- mailbox -----------------------------------------------------------------------------------
    def _message_write(self, value: int) -> None:
        regfile = self.gpu.regfile
        regfile.poke(self._message_address, value)
        if self.hang and self.running:
            self._taken_while_hung = value
        if not self.running or self.hang:
            return
        message = Message(value, regfile.peek(self._argument_address))
        if self._pending is not None:
            self._finish(self._pending[0])
            regfile.poke(self._response_address, SMU_RESP_BUSY_OTHER)
            message.response = SMU_RESP_BUSY_OTHER
            self.log.append(message)
            return
        if self.response_delay_s > 0:
            self._pending = (message, time.monotonic() + self.response_delay_s)
            return
        self._finish(message)

    def _response_read(self) -> int:
        if self._pending is not None and time.monotonic() >= self._pending[1]:
            self._finish(self._pending[0])
        return self.gpu.regfile.peek(self._response_address)

    def _finish(self, message: Message) -> None:
        """Run `message` and post its result and response code."""
        self._pending = None
        regfile = self.gpu.regfile
        if self.error_response is not None:
            message.response = self.error_response
            message.result = message.argument
        else:
            handler = self._handlers.get(message.message)
            if handler is None:
                message.response = SMU_RESP_CMD_UNKNOWN
                message.result = message.argument
            else:
                message.response, message.result = handler(message.argument)
        self.log.append(message)
        regfile.poke(self._argument_address, message.result)
        regfile.poke(self._response_address, message.response)
        if message.message == ppsmc.PPSMC_MSG_Mode1Reset and message.response == SMU_RESP_OK:
            self._schedule_mode1()

    def _debug_message_write(self, value: int) -> None:
        self.gpu.regfile.poke(self.gpu.regfile.address("MP1", "regMP1_SMN_C2PMSG_75"), value)
        self._debug_pending = value

    def _debug_response_write(self, value: int) -> None:
        """smu_cmn.c __smu_cmn_send_debug_msg writes argument, message, then clears the response:
        the firmware takes the message when its response is cleared."""
        regfile = self.gpu.regfile
        regfile.poke(self._debug_response_address, value)
        if value != SMU_RESP_NONE or self._debug_pending is None or not self.running or self.hang:
            return
        message, self._debug_pending = self._debug_pending, None
        known = (ppsmc.DEBUGSMC_MSG_TestMessage, ppsmc.DEBUGSMC_MSG_GetDebugData,
                 ppsmc.DEBUGSMC_MSG_DebugDumpExit)
        response = SMU_RESP_OK if message in known else SMU_RESP_CMD_UNKNOWN
        regfile.poke(self._debug_response_address, response)

    # -- mode1 ---------------------------------------------------------------------------------------
    def _schedule_mode1(self) -> None:
        machine = self.gpu.machine
        if machine is None or self.mode1_delay_s <= 0:
            self._do_mode1()
            return
        machine.schedule(self.mode1_delay_s, self._do_mode1)

    def _do_mode1(self) -> None:
        if self.on_mode1 is not None:
            self.on_mode1()
        self.gpu.mode1_reset()

    # -- messages ------------------------------------------------------------------------------------
    def _message_handlers(self) -> dict[int, Callable[[int], tuple[int, int]]]:
        handlers: dict[int, Callable[[int], tuple[int, int]]] = {
            # the model answers the test message with its argument plus one
            ppsmc.PPSMC_MSG_TestMessage: lambda arg: (SMU_RESP_OK, (arg + 1) & WORD),
            ppsmc.PPSMC_MSG_GetSmuVersion: lambda arg: (SMU_RESP_OK, self.firmware_version),
            ppsmc.PPSMC_MSG_GetDriverIfVersion: lambda arg: (SMU_RESP_OK, self.driver_if_version),
            ppsmc.PPSMC_MSG_SetDriverDramAddrHigh: self._set_dram_high,
            ppsmc.PPSMC_MSG_SetDriverDramAddrLow: self._set_dram_low,
            ppsmc.PPSMC_MSG_TransferTableSmu2Dram: self._smu_to_dram,
            ppsmc.PPSMC_MSG_TransferTableDram2Smu: self._dram_to_smu,
            ppsmc.PPSMC_MSG_SetAllowedFeaturesMaskLow: lambda arg: self._set_allowed(arg, 0),
            ppsmc.PPSMC_MSG_SetAllowedFeaturesMaskHigh: lambda arg: self._set_allowed(arg, 32),
            ppsmc.PPSMC_MSG_EnableAllSmuFeatures: self._enable_all,
            ppsmc.PPSMC_MSG_DisableAllSmuFeatures: self._disable_all,
            ppsmc.PPSMC_MSG_EnableSmuFeaturesLow: lambda arg: self._change_features(arg, 0, True),
            ppsmc.PPSMC_MSG_EnableSmuFeaturesHigh: lambda arg: self._change_features(arg, 32, True),
            ppsmc.PPSMC_MSG_DisableSmuFeaturesLow: lambda arg: self._change_features(arg, 0, False),
            ppsmc.PPSMC_MSG_DisableSmuFeaturesHigh: lambda arg: self._change_features(arg, 32, False),
            ppsmc.PPSMC_MSG_GetRunningSmuFeaturesLow:
                lambda arg: (SMU_RESP_OK, self.enabled_features & WORD),
            ppsmc.PPSMC_MSG_GetRunningSmuFeaturesHigh:
                lambda arg: (SMU_RESP_OK, self.enabled_features >> 32),
            ppsmc.PPSMC_MSG_GetDpmFreqByIndex: self._dpm_freq_by_index,
            ppsmc.PPSMC_MSG_GetMinDpmFreq: lambda arg: self._dpm_bound(arg, 0),
            ppsmc.PPSMC_MSG_GetMaxDpmFreq: lambda arg: self._dpm_bound(arg, -1),
            ppsmc.PPSMC_MSG_GetDcModeMaxDpmFreq: lambda arg: self._dpm_bound(arg, -1),
            ppsmc.PPSMC_MSG_SetSoftMinByFreq: lambda arg: self._soft_limit(arg, minimum=True),
            ppsmc.PPSMC_MSG_SetSoftMaxByFreq: lambda arg: self._soft_limit(arg, minimum=False),
            ppsmc.PPSMC_MSG_GetPptLimit: lambda arg: (SMU_RESP_OK, self.ppt_limit_w),
            ppsmc.PPSMC_MSG_SetPptLimit: self._set_ppt_limit,
            ppsmc.PPSMC_MSG_Mode1Reset: self._mode1_request,
            ppsmc.PPSMC_MSG_PrepareMp1ForUnload: self._prepare_for_unload,
        }
        for message in ACCEPTED_WITHOUT_EFFECT:
            handlers.setdefault(message, lambda arg: (SMU_RESP_OK, arg))
        return handlers

    def _set_dram_high(self, argument: int) -> tuple[int, int]:
        self.driver_table_high = argument
        return SMU_RESP_OK, argument

    def _set_dram_low(self, argument: int) -> tuple[int, int]:
        """smu_v13_0.c smu_v13_0_set_driver_table_location sends High, then Low: Low completes it."""
        if self.driver_table_high is None:
            return SMU_RESP_CMD_BAD_PREREQ, argument
        self.driver_table_address = (self.driver_table_high << 32) | argument
        return SMU_RESP_OK, argument

    def _table_target(self, argument: int) -> tuple[int, int | None, int]:
        """(response, VRAM offset of the driver table or None, table id) for a transfer."""
        table = argument & TABLE_ID_MASK
        if self.driver_table_address is None:
            return SMU_RESP_CMD_BAD_PREREQ, None, table
        if table not in TABLE_SIZES:
            return SMU_RESP_CMD_FAIL, None, table
        offset = self._vram_offset(self.driver_table_address, TABLE_SIZES[table])
        if offset is None:
            return SMU_RESP_CMD_FAIL, None, table
        return SMU_RESP_OK, offset, table

    def _vram_offset(self, mc_address: int, size: int) -> int | None:
        """The VRAM offset of MC address `mc_address` when [mc_address, +size) is inside the FB
        range the IFWI programmed in MMHUB (FB_LOCATION_BASE/TOP, 16 MiB units, TOP inclusive:
        mmhub_v3_0.c mmhub_v3_0_get_fb_location); None otherwise."""
        regfile = self.gpu.regfile
        base = regfile.get("MMHUB", "regMMMC_VM_FB_LOCATION_BASE") << FB_UNIT_SHIFT
        top = ((regfile.get("MMHUB", "regMMMC_VM_FB_LOCATION_TOP") + 1) << FB_UNIT_SHIFT) - 1
        offset = mc_address - base
        if mc_address < base or mc_address + size - 1 > top or offset + size > self.gpu.vram_size:
            return None
        return offset

    def _smu_to_dram(self, argument: int) -> tuple[int, int]:
        response, offset, table = self._table_target(argument)
        if offset is None:
            return response, argument
        if table == drv.TABLE_SMU_METRICS:
            self._update_metrics()
        data = self.tables[table]
        self.gpu.vram[offset:offset + len(data)] = data
        return SMU_RESP_OK, argument

    def _dram_to_smu(self, argument: int) -> tuple[int, int]:
        response, offset, table = self._table_target(argument)
        if offset is None:
            return response, argument
        if table in READ_ONLY_TABLES:
            return SMU_RESP_CMD_FAIL, argument
        size = TABLE_SIZES[table]
        self.tables[table][:] = self.gpu.vram[offset:offset + size]
        return SMU_RESP_OK, argument

    def _set_allowed(self, argument: int, shift: int) -> tuple[int, int]:
        allowed = self.allowed_features or 0
        allowed &= ~(WORD << shift)
        self.allowed_features = allowed | (argument << shift)
        return SMU_RESP_OK, argument

    def _enable_all(self, argument: int) -> tuple[int, int]:
        """Every supported feature the driver allowed (all of FeaturesToRun when it allowed none:
        the SCPM case, smu_v13_0_0 amdgpu_smu.c smu_smc_hw_setup skips the allowed mask then)."""
        allowed = SUPPORTED_FEATURES if self.allowed_features is None else self.allowed_features
        self.enabled_features = allowed & SUPPORTED_FEATURES
        self.prepared_for_unload = False
        return SMU_RESP_OK, argument

    def _disable_all(self, argument: int) -> tuple[int, int]:
        self.enabled_features = 0
        return SMU_RESP_OK, argument

    def _change_features(self, argument: int, shift: int, enable: bool) -> tuple[int, int]:
        mask = argument << shift
        if enable:
            if mask & ~SUPPORTED_FEATURES:
                return SMU_RESP_CMD_FAIL, argument
            self.enabled_features |= mask
        else:
            self.enabled_features &= ~mask
        return SMU_RESP_OK, argument

    def _clock(self, argument: int) -> tuple[int, int | None]:
        """(response, PPCLK id) of a clock message: unknown clock -> FAIL; its DPM off -> BAD_PREREQ."""
        clock = argument >> CLOCK_ID_SHIFT
        if clock not in DPM_LEVELS_MHZ:
            return SMU_RESP_CMD_FAIL, None
        if not self.enabled_features & (1 << CLOCK_FEATURE[clock]):
            return SMU_RESP_CMD_BAD_PREREQ, None
        return SMU_RESP_OK, clock

    def _dpm_freq_by_index(self, argument: int) -> tuple[int, int]:
        response, clock = self._clock(argument)
        if clock is None:
            return response, argument
        levels = DPM_LEVELS_MHZ[clock]
        index = argument & LOW_HALF
        if index == DPM_LEVEL_COUNT_INDEX:
            return SMU_RESP_OK, len(levels)
        if index >= len(levels):
            return SMU_RESP_CMD_FAIL, argument
        return SMU_RESP_OK, levels[index]

    def _dpm_bound(self, argument: int, position: int) -> tuple[int, int]:
        response, clock = self._clock(argument)
        if clock is None:
            return response, argument
        return SMU_RESP_OK, DPM_LEVELS_MHZ[clock][position]

    def _soft_limit(self, argument: int, minimum: bool) -> tuple[int, int]:
        """A soft limit is clamped into the clock's DPM range; a minimum above the soft maximum (or a
        maximum below the soft minimum) is refused with FAIL (the model's choice)."""
        response, clock = self._clock(argument)
        if clock is None:
            return response, argument
        levels = DPM_LEVELS_MHZ[clock]
        value = min(max(argument & LOW_HALF, levels[0]), levels[-1])
        if minimum:
            if value > self.soft_max[clock]:
                return SMU_RESP_CMD_FAIL, argument
            self.soft_min[clock] = value
        else:
            if value < self.soft_min[clock]:
                return SMU_RESP_CMD_FAIL, argument
            self.soft_max[clock] = value
        return SMU_RESP_OK, argument

    def _set_ppt_limit(self, argument: int) -> tuple[int, int]:
        self.ppt_limit_w = argument & LOW_HALF
        return SMU_RESP_OK, argument

    def _mode1_request(self, argument: int) -> tuple[int, int]:
        allowed = MODE1_RAS_FATAL_FLAG if self.firmware_version >= MODE1_RAS_FATAL_MIN_VERSION else 0
        if argument & ~allowed:
            return SMU_RESP_CMD_FAIL, argument
        return SMU_RESP_OK, argument

    def _prepare_for_unload(self, argument: int) -> tuple[int, int]:
        """smu_v13_0_0_ppt.c smu_v13_0_0_set_mp1_state(PP_MP1_STATE_UNLOAD): the PMFW winds down its
        features for a driver unload (the model turns them off) and keeps answering."""
        self.prepared_for_unload = True
        self.enabled_features = 0
        return SMU_RESP_OK, argument

    # -- metrics ---------------------------------------------------------------------------------------
    def activity(self) -> int:
        """Synthetic GFX activity in percent: a triangle wave over ACTIVITY_PERIOD_S."""
        phase = ((time.monotonic() - self.started_at) % ACTIVITY_PERIOD_S) / ACTIVITY_PERIOD_S
        return round(200 * min(phase, 1 - phase))

    def _clock_now(self, clock: int, activity: int) -> int:
        """The clock the firmware runs now: within the soft limits, higher under load."""
        low = self.soft_min[clock]
        high = self.soft_max[clock]
        if not self.enabled_features & (1 << CLOCK_FEATURE[clock]):
            return DPM_LEVELS_MHZ[clock][0]  # no DPM: the boot level
        target = low + (high - low) * activity // 100
        levels = DPM_LEVELS_MHZ[clock]
        if len(levels) <= 2:
            return target  # fine-grained: any frequency between its two levels
        # discrete: the highest level at or below the target that the soft limits allow
        allowed = [level for level in levels if low <= level <= high] or [low]
        return max([level for level in allowed if level <= target] or [allowed[0]])

    def _update_metrics(self) -> None:
        external = drv.SmuMetricsExternal_t.from_buffer(self.tables[drv.TABLE_SMU_METRICS])
        metrics = external.SmuMetrics
        activity = self.activity()
        elapsed = time.monotonic() - self.started_at
        self.metrics_counter += 1
        for clock in DPM_LEVELS_MHZ:
            metrics.CurrClock[clock] = self._clock_now(clock, activity)
        gfxclk = metrics.CurrClock[drv.PPCLK_GFXCLK]
        metrics.AverageGfxclkFrequencyTarget = self.soft_max[drv.PPCLK_GFXCLK]
        metrics.AverageGfxclkFrequencyPreDs = gfxclk
        metrics.AverageGfxclkFrequencyPostDs = gfxclk if activity > BUSY_ACTIVITY else 0
        metrics.AverageFclkFrequencyPreDs = metrics.CurrClock[drv.PPCLK_FCLK]
        metrics.AverageFclkFrequencyPostDs = metrics.CurrClock[drv.PPCLK_FCLK]
        metrics.AverageMemclkFrequencyPreDs = metrics.CurrClock[drv.PPCLK_UCLK]
        metrics.AverageMemclkFrequencyPostDs = metrics.CurrClock[drv.PPCLK_UCLK]
        metrics.MetricsCounter = self.metrics_counter
        metrics.AverageGfxActivity = activity
        metrics.AverageUclkActivity = activity // 2
        power = IDLE_POWER_W + (self.ppt_limit_w - IDLE_POWER_W) * activity // 100
        metrics.AverageSocketPower = power
        metrics.AverageTotalBoardPower = power
        self.energy = (self.energy + power) & WORD
        metrics.EnergyAccumulator = self.energy
        # temperatures follow the load, with a slow ripple so two reads rarely agree
        edge = IDLE_TEMPERATURE_C + activity * LOAD_HEATING_C // 100 + round(RIPPLE_C * math.sin(elapsed))
        for sensor, above_edge in TEMPERATURE_ABOVE_EDGE_C.items():
            metrics.AvgTemperature[sensor] = edge + above_edge
        metrics.AvgTemperatureFanIntake = INTAKE_TEMPERATURE_C
        metrics.PcieRate = PCIE_RATE_GEN4
        metrics.PcieWidth = PCIE_WIDTH_X16
        metrics.AvgFanPwm = min(FAN_IDLE_PWM + activity, FAN_FULL_PWM)
        metrics.AvgFanRpm = FAN_IDLE_RPM + activity * FAN_RPM_PER_ACTIVITY

    def metrics(self) -> drv.SmuMetrics_t:
        """The metrics as the firmware would report them now (a fresh copy, for tests)."""
        self._update_metrics()
        return drv.SmuMetricsExternal_t.from_bytes(bytes(self.tables[drv.TABLE_SMU_METRICS])).SmuMetrics
