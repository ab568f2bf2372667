"""The SMU 13.0.0 (MP1, the power management firmware) for the AM driver: mailbox, tables, DPM, mode1.

`SMUMailbox` is the message/argument/response mailbox (smu_cmn.c smu_cmn_send_smc_msg_with_param):
clear the response (MP1 C2PMSG_90), write the argument (C2PMSG_82) and the message id (C2PMSG_66,
smu_v13_0_0_ppsmc.h PPSMC_MSG_*), poll the response until it is not 0, then read the result from the
argument register. A response other than SMU_RESP_OK raises `SMUError` naming the message and the
response (smu_cmn.c SMU_RESP_*, with the errno __smu_cmn_reg2errno gives it); no answer within the
timeout raises DeviceTimeout naming the message and the response register's last value; a read of
all ones raises DeviceLost (hal's watched BAR). The mailbox has one user at a time: the handle must
hold the device's ownership lock (hal.open takes it) and a lock per device serialises the threads
of this process. It works without a bring-up (`open_mailbox(pci)`), for tools.reset_gpu.

`SMUv13_0_0` is the SMU block (amdgpu_smu.c smu_hw_init / smu_smc_hw_setup): hw_init checks that
the PMFW runs (MP1_FIRMWARE_FLAGS.INTERRUPTS_ENABLED through SMN; the PSP loads the PMFW), reads
the firmware and driver-interface versions (a driver-interface mismatch is an error naming both:
the tables' layouts are the header's), allocates the driver table in VRAM and gives the SMU its
address, allows and enables the features, and reads the DPM levels and limits of the main clocks.
`metrics()` transfers the metrics table and decodes it; `mode1_reset()` resets the whole GPU.
"""
from __future__ import annotations

import dataclasses
import errno as errno_codes
import logging
import threading
from typing import TYPE_CHECKING, TypedDict

from autogen.amd import smu13_driver_if_v13_0_0 as drv
from autogen.amd import smu_v13_0_0_ppsmc as ppsmc
from autogen.amd.regs import mp_13_0_0
from autogen.linux import pci_regs

from drivers.am.ip import POLL_INTERVAL_S, IPBlock
from hal.errors import DeviceBusy, DeviceTimeout, FirmwareError, InvalidArgument

if TYPE_CHECKING:
    from drivers.am.memory import VRAMBuffer
    from drivers.am.regs import Registers
    from hal.pcidev import PCIDevice

log = logging.getLogger(__name__)

# smu_cmn.c SMU_RESP_*: the response codes of C2PMSG_90, and the errno __smu_cmn_reg2errno maps each to
SMU_RESP_NONE = 0
SMU_RESP_OK = ppsmc.PPSMC_Result_OK
SMU_RESP_CMD_FAIL = ppsmc.PPSMC_Result_Failed
SMU_RESP_CMD_UNKNOWN = ppsmc.PPSMC_Result_UnknownCmd
SMU_RESP_CMD_BAD_PREREQ = ppsmc.PPSMC_Result_CmdRejectedPrereq
SMU_RESP_BUSY_OTHER = ppsmc.PPSMC_Result_CmdRejectedBusy
SMU_RESP_DEBUG_END = 0xFB  # smu_cmn.c SMU_RESP_DEBUG_END ("SMC_Result_DebugDataDumpEnd"); no header has it
RESPONSE_NAMES = {
    SMU_RESP_NONE: "SMU_RESP_NONE",
    SMU_RESP_OK: "SMU_RESP_OK",
    SMU_RESP_CMD_FAIL: "SMU_RESP_CMD_FAIL",
    SMU_RESP_CMD_UNKNOWN: "SMU_RESP_CMD_UNKNOWN",
    SMU_RESP_CMD_BAD_PREREQ: "SMU_RESP_CMD_BAD_PREREQ",
    SMU_RESP_BUSY_OTHER: "SMU_RESP_BUSY_OTHER",
    SMU_RESP_DEBUG_END: "SMU_RESP_DEBUG_END",
}
RESPONSE_ERRNO = {
    SMU_RESP_CMD_FAIL: errno_codes.EIO,
    SMU_RESP_CMD_UNKNOWN: errno_codes.EOPNOTSUPP,
    SMU_RESP_CMD_BAD_PREREQ: errno_codes.EINVAL,
    SMU_RESP_BUSY_OTHER: errno_codes.EBUSY,
}
RESPONSE_MEANING = {
    SMU_RESP_CMD_FAIL: "the SMU ran the message and it failed",
    SMU_RESP_CMD_UNKNOWN: "the SMU firmware does not know this message",
    SMU_RESP_CMD_BAD_PREREQ: "valid message, but its prerequisites are not met",
    SMU_RESP_BUSY_OTHER: "the SMU is busy with another message; retry",
    SMU_RESP_DEBUG_END: "the SMU is in a debug data dump",
}
MESSAGE_PREFIX = "PPSMC_MSG_"
MESSAGE_NAMES = {value: name[len(MESSAGE_PREFIX):] for name, value in vars(ppsmc).items()
                 if name.startswith(MESSAGE_PREFIX) and isinstance(value, int)}

# smu_cmn.c __smu_cmn_poll_stat: adev->usec_timeout * 20 polls 1 us apart; usec_timeout is
# AMDGPU_MAX_USEC_TIMEOUT (amdgpu.h: 100000), so 2 s
SMU_TIMEOUT_S = 2.0
# smu_v13_0.h SMU13_MODE1_RESET_WAIT_TIME_IN_MS: the pause after the SMU took a mode1 request
MODE1_WAIT_S = 0.5
# amdgpu_device.c amdgpu_device_mode1_reset: the memory-size register answers again within
# usec_timeout (100 ms) once the ASIC is out of reset
MODE1_READY_TIMEOUT_S = 0.1
PROCESS_LOCK_TIMEOUT_S = 5.0  # how long a thread waits for another thread's message to finish

# smu_v13_0.h MP1_Public | smnMP1_FIRMWARE_FLAGS: the PMFW's flags at SMN 0x03b00000 | 0x3010024
MP1_PUBLIC = 0x03B00000
SMN_MP1_FIRMWARE_FLAGS = 0x3010024
INTERRUPTS_ENABLED = mp_13_0_0.regMP1_FIRMWARE_FLAGS.field("INTERRUPTS_ENABLED")
WORD_MASK = 0xFFFFFFFF
HIGH_SHIFT = 32
CLOCK_ID_SHIFT = 16  # smu_v13_0.c: clock messages carry the PPCLK id in bits 31:16
DPM_LEVEL_COUNT_INDEX = 0xFF  # smu_v13_0.c smu_v13_0_get_dpm_level_count asks index 0xff
DPM_FREQUENCY_MASK = 0x7FFFFFFF  # smu_v13_0.c smu_v13_0_get_dpm_freq_by_index masks bit 31 off
FREQUENCY_MASK = 0xFFFF  # smu_v13_0.c smu_v13_0_set_soft_freq_limited_range: MHz in bits 15:0
# smu_v13_0_0_ppt.c smu_v13_0_0_set_mp1_state: PrepareMp1ForUnload's argument
PREPARE_FOR_UNLOAD_ARGUMENT = 0x55
PAGE_SIZE = 4096
# smu_v13_0_0_ppt.c MP0_MP1_DATA_REGION_SIZE_COMBOPPTABLE: the largest table the driver table carries
COMBO_PPTABLE_SIZE = 0x4000
# smu_v13_0_0_ppt.c smu_v13_0_0_tables_init: the tables that go through the one driver table, whose
# size is the largest of them (amdgpu_smu.c smu_init_fb_allocations)
DRIVER_TABLE_SIZE = max(drv.PPTable_t.SIZE, drv.Watermarks_t.SIZE, drv.SmuMetricsExternal_t.SIZE,
                        drv.SwI2cRequest_t.SIZE, drv.OverDriveTableExternal_t.SIZE,
                        drv.DpmActivityMonitorCoeffIntExternal_t.SIZE, COMBO_PPTABLE_SIZE,
                        drv.EccInfoTable_t.SIZE)
# the features this driver lets the PMFW run: all (smu_v13_0_0_ppt.c
# smu_v13_0_0_get_allowed_feature_mask starts from all ones) except GFXOFF, which this driver does not
# manage (amdgpu turns it off around register access with amdgpu_gfx_off_ctrl)
ALLOWED_FEATURES = ((1 << 64) - 1) & ~(1 << drv.FEATURE_GFXOFF_BIT)
# the clocks whose DPM levels hw_init reads, with the feature that must run for each
# (smu_v13_0_0_ppt.c smu_v13_0_0_set_default_dpm_table)
DPM_CLOCKS = {
    "gfxclk": (drv.PPCLK_GFXCLK, drv.FEATURE_DPM_GFXCLK_BIT),
    "socclk": (drv.PPCLK_SOCCLK, drv.FEATURE_DPM_SOCCLK_BIT),
    "uclk": (drv.PPCLK_UCLK, drv.FEATURE_DPM_UCLK_BIT),
    "fclk": (drv.PPCLK_FCLK, drv.FEATURE_DPM_FCLK_BIT),
}
METRIC_CLOCKS = {"gfxclk": drv.PPCLK_GFXCLK, "socclk": drv.PPCLK_SOCCLK, "uclk": drv.PPCLK_UCLK,
                 "fclk": drv.PPCLK_FCLK, "vclk0": drv.PPCLK_VCLK_0, "dclk0": drv.PPCLK_DCLK_0}

_process_locks: dict[str, threading.Lock] = {}
_process_locks_guard = threading.Lock()


class SMUError(FirmwareError):
    """The SMU answered a message with an error response. `smu_message` names the message,
    `response` is the C2PMSG_90 code and `response_name` its SMU_RESP_* name."""

    def __init__(self, text: str, *, smu_message: str, response: int, errno: int) -> None:
        super().__init__(text, errno=errno)
        self.smu_message = smu_message
        self.response = response
        self.response_name = RESPONSE_NAMES.get(response, f"unknown response {response:#x}")


def message_name(message: int) -> str:
    return MESSAGE_NAMES.get(message, f"message {message:#x}")


def _process_lock(bdf: str) -> threading.Lock:
    with _process_locks_guard:
        return _process_locks.setdefault(bdf, threading.Lock())


class SMUMailbox:
    """The MP1 message mailbox of one GPU (see the module docstring)."""

    def __init__(self, pci: "PCIDevice", registers: "Registers", timeout_s: float = SMU_TIMEOUT_S) -> None:
        if not pci.holds_ownership_lock:
            raise InvalidArgument(f"{pci.bdf}: the SMU mailbox needs the device's ownership lock: open "
                                  "it with hal.open (read-only tools must not send SMU messages)")
        self.pci = pci
        self.registers = registers
        self.timeout_s = timeout_s
        self._message = registers.reg("MP1", "regMP1_SMN_C2PMSG_66")
        self._argument = registers.reg("MP1", "regMP1_SMN_C2PMSG_82")
        self._response = registers.reg("MP1", "regMP1_SMN_C2PMSG_90")
        self._rsmu_index = registers.reg("NBIO", "regBIF_BX_PF0_RSMU_INDEX")
        self._rsmu_data = registers.reg("NBIO", "regBIF_BX_PF0_RSMU_DATA")
        self._lock = _process_lock(pci.bdf)
        # smu_cmn.c SMU_FW_INIT: the response register's first value is not a previous answer of ours
        self._last_message: int | None = None

    def firmware_running(self) -> bool:
        """MP1_FIRMWARE_FLAGS.INTERRUPTS_ENABLED, through the RSMU window (smu_v13_0.c
        smu_v13_0_check_fw_status; amdgpu_device.c amdgpu_device_indirect_rreg posts the index write
        with a read of the index before it reads the data)."""
        with self._lock_for("reading the SMU firmware flags"):
            self._rsmu_index.write(MP1_PUBLIC | SMN_MP1_FIRMWARE_FLAGS)
            self._rsmu_index.read()
            flags = self._rsmu_data.read()
        return bool(INTERRUPTS_ENABLED.decode(flags))

    def forget_state(self) -> None:
        """The PMFW restarted (mode1, power cycle): its first response is not an answer to us."""
        self._last_message = None

    def send(self, message: int, argument: int = 0, timeout_s: float | None = None) -> int:
        """Send `message` (a PPSMC_MSG_* id) with `argument`; returns the SMU's result argument."""
        timeout = self.timeout_s if timeout_s is None else timeout_s
        name = message_name(message)
        with self._lock_for(f"sending {name}"):
            if self._last_message is not None:
                # smu_cmn.c: the previous message must have been answered before a new one goes out
                self._wait(self._last_message, None, timeout, previous=True)
            self._last_message = message
            self._response.write(SMU_RESP_NONE)
            self._argument.write(argument)
            self._message.write(message)
            response = self._wait(message, argument, timeout, previous=False)
            if response != SMU_RESP_OK:
                self._raise(name, argument, response)
            return self._argument.read()

    def _lock_for(self, what: str) -> "_HeldLock":
        return _HeldLock(self._lock, self.pci.bdf, what)

    def _wait(self, message: int, argument: int | None, timeout_s: float, previous: bool) -> int:
        os = self.pci.os
        deadline = os.monotonic() + timeout_s
        value = self._response.read()
        while value == SMU_RESP_NONE:
            if os.monotonic() >= deadline:
                what = "its previous message" if previous else "the message"
                shown = "" if argument is None else f" (argument {argument:#010x})"
                raise DeviceTimeout(
                    f"{self.pci.bdf}: SMU did not answer {what} {message_name(message)}{shown} within "
                    f"{timeout_s} s: MP1 C2PMSG_90 (response) last read {value:#010x}, C2PMSG_66 "
                    f"(message) {self._message.read():#010x}; the PMFW hangs or is not loaded: "
                    "mode1 reset the GPU", errno=errno_codes.ETIME)
            os.sleep(POLL_INTERVAL_S)
            value = self._response.read()
        return value

    def _raise(self, name: str, argument: int, response: int) -> None:
        response_name = RESPONSE_NAMES.get(response, f"unknown response {response:#x}")
        meaning = RESPONSE_MEANING.get(response, "an undefined response")
        raise SMUError(f"{self.pci.bdf}: SMU answered {name} (argument {argument:#010x}) with "
                       f"{response_name} ({response:#x}): {meaning}", smu_message=name,
                       response=response, errno=RESPONSE_ERRNO.get(response, errno_codes.EREMOTEIO))


class _HeldLock:
    """The per-device process lock, taken with a bound wait (DeviceBusy when another thread keeps it)."""

    def __init__(self, lock: threading.Lock, bdf: str, what: str) -> None:
        self.lock = lock
        self.bdf = bdf
        self.what = what

    def __enter__(self) -> None:
        if not self.lock.acquire(timeout=PROCESS_LOCK_TIMEOUT_S):
            raise DeviceBusy(f"{self.bdf}: another thread of this process kept the SMU mailbox for "
                             f"{PROCESS_LOCK_TIMEOUT_S} s; gave up {self.what}")

    def __exit__(self, *exc_info) -> None:
        self.lock.release()


def open_mailbox(pci: "PCIDevice", timeout_s: float = SMU_TIMEOUT_S) -> SMUMailbox:
    """The SMU mailbox of a GPU without bringing it up: discovery only (for the register bases)."""
    from drivers.am.device import AMDevice  # the device module imports this one
    device = AMDevice(pci, block_order=())
    return SMUMailbox(pci, device.registers, timeout_s)


def mode1_reset(mailbox: SMUMailbox, *, wait_s: float = MODE1_WAIT_S,
                ready_timeout_s: float = MODE1_READY_TIMEOUT_S) -> None:
    """Mode1 reset through the SMU (amdgpu_device.c amdgpu_device_mode1_reset with
    smu_v13_0_0_ppt.c smu_v13_0_0_mode1_reset): config state saved, bus mastering off, Mode1Reset
    (argument 0: no RAS fatal error), the wait the SMU needs, config state restored, then the
    memory-size register polled until it answers. The PSP's bootloader wait is a no-op on MP0 13.0.0
    (psp_v13_0.c psp_v13_0_wait_for_bootloader_steady_state)."""
    pci = mailbox.pci
    saved = pci.save_config_state()
    command = pci.cfg_read16(pci_regs.PCI_COMMAND)
    pci.cfg_write16(pci_regs.PCI_COMMAND, command & ~pci_regs.PCI_COMMAND_MASTER)
    mailbox.send(ppsmc.PPSMC_MSG_Mode1Reset, 0)
    pci.os.sleep(wait_s)
    mailbox.forget_state()
    pci.restore_config_state(saved)
    memsize = mailbox.registers.reg("NBIO", "regRCC_DEV0_EPF0_RCC_CONFIG_MEMSIZE")
    deadline = pci.os.monotonic() + ready_timeout_s
    value = memsize.read()
    while value == WORD_MASK:
        if pci.os.monotonic() >= deadline:
            raise DeviceTimeout(f"{pci.bdf}: the GPU did not come out of its mode1 reset within "
                                f"{ready_timeout_s} s (NBIO RCC_CONFIG_MEMSIZE still {value:#010x})")
        pci.os.sleep(POLL_INTERVAL_S)
        value = memsize.read()
    log.info("%s: mode1 reset done", pci.bdf)


@dataclasses.dataclass(frozen=True)
class DpmClock:
    """One clock's DPM levels (MHz, as the SMU lists them) and its minimum and maximum."""

    levels: tuple[int, ...]
    minimum: int
    maximum: int


class SMUMetrics(TypedDict):
    """What `SMUv13_0_0.metrics()` decodes from SmuMetrics_t (degrees C, W, MHz, percent)."""

    counter: int
    temperature_edge_c: int
    temperature_hotspot_c: int
    temperature_memory_c: int
    power_socket_w: int
    clocks_mhz: dict[str, int]
    activity_gfx_percent: int
    activity_memory_percent: int
    fan_rpm: int


def decode_metrics(data: bytes) -> SMUMetrics:
    """SmuMetricsExternal_t (as TransferTableSmu2Dram of TABLE_SMU_METRICS leaves it) decoded; also
    what a reader of the owner's driver table uses (tools.smi)."""
    metrics = drv.SmuMetricsExternal_t.from_bytes(data).SmuMetrics
    temperatures = metrics.AvgTemperature
    return SMUMetrics(
        counter=metrics.MetricsCounter,
        temperature_edge_c=temperatures[drv.TEMP_EDGE],
        temperature_hotspot_c=temperatures[drv.TEMP_HOTSPOT],
        temperature_memory_c=temperatures[drv.TEMP_MEM],
        power_socket_w=metrics.AverageSocketPower,
        clocks_mhz={name: metrics.CurrClock[clock] for name, clock in METRIC_CLOCKS.items()},
        activity_gfx_percent=metrics.AverageGfxActivity,
        activity_memory_percent=metrics.AverageUclkActivity,
        fan_rpm=metrics.AvgFanRpm,
    )


class SMUv13_0_0(IPBlock):
    """MP1 13.0.0: the PMFW's mailbox, driver table, features, DPM clocks, metrics and mode1."""

    block = "SMU"
    versions = ((13, 0, 0),)

    def sw_init(self) -> None:
        config = self.device.config
        self.mailbox = SMUMailbox(self.device.pci, self.device.registers, config.smu_timeout_s)
        self.driver_table: "VRAMBuffer | None" = None
        self.firmware_version = 0
        self.driver_if_version = 0
        self.enabled_features = 0
        self.clocks: dict[str, DpmClock] = {}

    def hw_init(self) -> None:
        bdf = self.device.pci.bdf
        mailbox = self.mailbox
        if not mailbox.firmware_running():
            raise FirmwareError(f"{bdf}: the SMU firmware is not running (MP1_FIRMWARE_FLAGS "
                                "INTERRUPTS_ENABLED is 0): the PSP loads it (LOAD_IP_FW of the SMC "
                                "image): bring the PSP block up first, or mode1 reset the GPU")
        self.driver_if_version = mailbox.send(ppsmc.PPSMC_MSG_GetDriverIfVersion)
        self.firmware_version = mailbox.send(ppsmc.PPSMC_MSG_GetSmuVersion)
        if self.driver_if_version != drv.SMU13_0_0_DRIVER_IF_VERSION:
            raise FirmwareError(
                f"{bdf}: the SMU firmware {self.firmware_text} speaks driver interface "
                f"{self.driver_if_version:#x}, this driver's tables are interface "
                f"{drv.SMU13_0_0_DRIVER_IF_VERSION:#x} (smu13_driver_if_v13_0_0.h): the table layouts "
                "differ; use the firmware that matches the header")
        self.driver_table = self.device.memory.alloc_vram(DRIVER_TABLE_SIZE, alignment=PAGE_SIZE,
                                                          purpose="SMU driver table")
        address = self.driver_table.mc_address
        # smu_v13_0.c smu_v13_0_set_driver_table_location: High first, then Low
        mailbox.send(ppsmc.PPSMC_MSG_SetDriverDramAddrHigh, address >> HIGH_SHIFT)
        mailbox.send(ppsmc.PPSMC_MSG_SetDriverDramAddrLow, address & WORD_MASK)
        # smu_v13_0.c smu_v13_0_set_allowed_mask: High first, then Low; then EnableAllSmuFeatures
        mailbox.send(ppsmc.PPSMC_MSG_SetAllowedFeaturesMaskHigh, ALLOWED_FEATURES >> HIGH_SHIFT)
        mailbox.send(ppsmc.PPSMC_MSG_SetAllowedFeaturesMaskLow, ALLOWED_FEATURES & WORD_MASK)
        mailbox.send(ppsmc.PPSMC_MSG_EnableAllSmuFeatures)
        self.enabled_features = self.read_enabled_features()
        self.clocks = self._read_dpm_clocks()
        log.info("%s: SMU firmware %s, driver interface %#x, features %#018x", bdf, self.firmware_text,
                 self.driver_if_version, self.enabled_features)

    def hw_fini(self) -> None:
        """amdgpu sends nothing on an ordinary unload of MP1 13.0.0 (amdgpu_smu.c smu_disable_dpms:
        the PMFW handles its features; smu_reset_mp1_state only for 13.0.10): the PMFW keeps
        running for the next owner. `prepare_for_unload()` is the shutdown path's message."""
        if self.driver_table is not None:
            self.device.memory.free_vram(self.driver_table)
            self.driver_table = None

    # -- queries -----------------------------------------------------------------------------------
    @property
    def firmware_text(self) -> str:
        """The PMFW version as amdgpu prints it (smu_v13_0.c smu_v13_0_check_fw_version: one byte each
        of program, major, minor and debug, high to low)."""
        program, major, minor, debug = self.firmware_version.to_bytes(4, "big")
        return f"{major}.{minor}.{debug} (program {program})"

    def read_enabled_features(self) -> int:
        """smu_cmn.c smu_cmn_get_enabled_mask: GetRunningSmuFeaturesLow, then High."""
        low = self.mailbox.send(ppsmc.PPSMC_MSG_GetRunningSmuFeaturesLow)
        high = self.mailbox.send(ppsmc.PPSMC_MSG_GetRunningSmuFeaturesHigh)
        return (high << HIGH_SHIFT) | low

    def _read_dpm_clocks(self) -> dict[str, DpmClock]:
        clocks = {}
        for name, (clock, feature) in DPM_CLOCKS.items():
            if not self.enabled_features & (1 << feature):
                continue
            selector = clock << CLOCK_ID_SHIFT
            count = self.mailbox.send(ppsmc.PPSMC_MSG_GetDpmFreqByIndex, selector | DPM_LEVEL_COUNT_INDEX)
            levels = tuple(self.mailbox.send(ppsmc.PPSMC_MSG_GetDpmFreqByIndex, selector | index)
                           & DPM_FREQUENCY_MASK for index in range(count))
            minimum = self.mailbox.send(ppsmc.PPSMC_MSG_GetMinDpmFreq, selector)
            maximum = self.mailbox.send(ppsmc.PPSMC_MSG_GetMaxDpmFreq, selector)
            clocks[name] = DpmClock(levels, minimum, maximum)
        return clocks

    def set_soft_limits(self, clock: str, minimum_mhz: int | None = None,
                        maximum_mhz: int | None = None) -> None:
        """smu_v13_0.c smu_v13_0_set_soft_freq_limited_range: SetSoftMaxByFreq, then SetSoftMinByFreq."""
        if clock not in DPM_CLOCKS:
            raise InvalidArgument(f"no DPM clock {clock!r} (known: {', '.join(DPM_CLOCKS)})")
        selector = DPM_CLOCKS[clock][0] << CLOCK_ID_SHIFT
        if maximum_mhz is not None:
            self.mailbox.send(ppsmc.PPSMC_MSG_SetSoftMaxByFreq, selector | (maximum_mhz & FREQUENCY_MASK))
        if minimum_mhz is not None:
            self.mailbox.send(ppsmc.PPSMC_MSG_SetSoftMinByFreq, selector | (minimum_mhz & FREQUENCY_MASK))

    def metrics(self) -> SMUMetrics:
        """Transfer the metrics table into the driver table (smu_cmn.c smu_cmn_get_metrics_table:
        TransferTableSmu2Dram of TABLE_SMU_METRICS) and decode it. HDP 6.0 caches no reads, so no
        invalidate is needed before reading it through BAR0."""
        if self.driver_table is None:
            raise InvalidArgument(f"{self.device.pci.bdf}: the SMU block is not up (no driver table)")
        self.mailbox.send(ppsmc.PPSMC_MSG_TransferTableSmu2Dram, drv.TABLE_SMU_METRICS)
        return decode_metrics(self.driver_table.view.read(0, drv.SmuMetricsExternal_t.SIZE))

    # -- resets and unload -------------------------------------------------------------------------
    def prepare_for_unload(self) -> None:
        """PrepareMp1ForUnload (smu_v13_0_0_ppt.c smu_v13_0_0_set_mp1_state, PP_MP1_STATE_UNLOAD):
        what amdgpu sends before a shutdown or reboot (amdgpu_drv.c amdgpu_pci_shutdown)."""
        self.mailbox.send(ppsmc.PPSMC_MSG_PrepareMp1ForUnload, PREPARE_FOR_UNLOAD_ARGUMENT)

    def mode1_reset(self) -> None:
        """Reset the whole GPU through the SMU (see `mode1_reset`). Every block's state is gone after
        it: the device must be brought up again."""
        config = self.device.config
        mode1_reset(self.mailbox, wait_s=config.smu_mode1_wait_s,
                    ready_timeout_s=config.smu_mode1_ready_timeout_s)
