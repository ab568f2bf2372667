"""hal.trace: recording what crosses the HAL seam on the mock, replaying it, the polling rule,
DMA submissions and device writes, failed operations, and the trace format's typed errors."""
from __future__ import annotations

import pathlib
import struct
import subprocess
import sys
import time
import zlib

import pytest
from autogen.linux import pci_regs

import hal
from hal import trace as hal_trace
from hal.errors import BadBinary, DeviceTimeout, UnsupportedOperation
from hal.trace_format import (CFG_READ, MMIO_READ, OS_CHANGE, OS_QUERY, MMIO_WRITE, PREAMBLE, BadTrace, TraceHeader, TraceReader,
                              TraceWriter)
from mockgpu import EDU_BDF
from mockgpu.edu import (EDU_DMA_BUFFER_BASE, EDU_DMA_CMD, EDU_DMA_CMD_IRQ, EDU_DMA_CMD_START,
                         EDU_DMA_CMD_TO_HOST, EDU_DMA_COUNT, EDU_DMA_DST, EDU_DMA_SRC, EDU_INTR_ACK,
                         EDU_INTR_STATUS, EDU_STATUS, EDU_STATUS_DMA_BUSY)

EDU = f"vfio:{EDU_BDF}"
PROJECT = pathlib.Path(__file__).resolve().parents[2]
MESSAGE = b"recorded through the iommu"
IN_BUFFER = 4096 + 8  # where the message sits in the DMA buffer (its second page)


def edu_dma(dev, src: int, dst: int, count: int, command: int) -> None:
    bar = dev.bar(0)
    bar.write64(EDU_DMA_SRC, src)
    bar.write64(EDU_DMA_DST, dst)
    bar.write64(EDU_DMA_COUNT, count)
    bar.write64(EDU_DMA_CMD, EDU_DMA_CMD_START | command)
    dev.poll32(0, EDU_STATUS, EDU_STATUS_DMA_BUSY, 0, timeout_s=2.0, what="edu DMA")


def edu_driver(dev, message: bytes = MESSAGE) -> dict:
    """A small driver: the message to the device and back by DMA, interrupts waited for."""
    dev.enable_interrupts("msix", 1)
    buffer = dev.alloc_dma(2 * 4096)
    buffer.region.write(IN_BUFFER, message)
    edu_dma(dev, buffer.bus_address_of(IN_BUFFER), EDU_DMA_BUFFER_BASE, len(message), EDU_DMA_CMD_IRQ)
    fired = dev.wait_irq(0, timeout_s=1.0)
    bar = dev.bar(0)
    bar.write32(EDU_INTR_ACK, bar.read32(EDU_INTR_STATUS))
    edu_dma(dev, EDU_DMA_BUFFER_BASE, buffer.bus_address, len(message), EDU_DMA_CMD_TO_HOST)
    back = buffer.region.read(0, len(message))
    try:
        dev.wait_irq(0, timeout_s=0.01)
        timed_out = False
    except DeviceTimeout:
        timed_out = True
    dev.free_dma(buffer)
    return {"fired": fired, "back": back, "timed_out": timed_out}


@pytest.fixture
def slow_edu(machine):
    """The edu DMA takes 5 ms, so the driver polls its status a few times."""
    machine.device(EDU_BDF).dma_delay_s = 0.005
    return machine


def record_edu(machine, path) -> dict:
    with hal.open(EDU, os=machine.os, unbind=True, trace=str(path)) as dev:
        return edu_driver(dev)


def replay(path, driver=edu_driver, **kwargs):
    dev, replayer = hal_trace.open_replay(str(path))
    result = error = None
    try:
        result = driver(dev, **kwargs)
    except hal.HalError as exc:
        error = exc
    finally:
        try:
            dev.close()
        except hal.HalError as exc:
            error = error or exc
    if replayer.divergence is None and error is None:
        replayer.finish()
    return result, replayer, error


def test_record_then_replay_gives_the_same_results_and_no_divergence(slow_edu, tmp_path):
    path = tmp_path / "edu.trace"
    recorded = record_edu(slow_edu, path)
    assert recorded == {"fired": 1, "back": MESSAGE, "timed_out": True}
    header = TraceReader(str(path)).header
    assert header.device["vendor_id"] == 0x1234 and header.device["backend"] == "vfio"
    result, replayer, error = replay(path)
    assert error is None and replayer.divergence is None
    # the bytes the device wrote came from the trace; the interrupt count and the timeout too
    assert result == recorded
    assert replayer.operations > 10


def test_a_different_dma_content_at_submission_is_a_divergence(slow_edu, tmp_path):
    path = tmp_path / "edu.trace"
    record_edu(slow_edu, path)
    changed = MESSAGE.replace(b"iommu", b"IOMMU")
    _, replayer, error = replay(path, message=changed)
    divergence = replayer.divergence
    assert isinstance(error, hal_trace.TraceDivergence) and divergence is not None
    assert "DMA #0+0x1000" in divergence.expected and "by the CPU" in divergence.got
    at = IN_BUFFER + MESSAGE.index(b"iommu")
    assert f"first difference at DMA #0+{at:#x}" in divergence.got
    assert divergence.history  # what came before is shown


def test_a_bar_write_of_another_value_names_offset_and_both_values(slow_edu, tmp_path):
    path = tmp_path / "edu.trace"
    record_edu(slow_edu, path)

    def acks_too_much(dev):
        dev.enable_interrupts("msix", 1)
        buffer = dev.alloc_dma(2 * 4096)
        buffer.region.write(IN_BUFFER, MESSAGE)
        edu_dma(dev, buffer.bus_address_of(IN_BUFFER), EDU_DMA_BUFFER_BASE, len(MESSAGE), EDU_DMA_CMD_IRQ)
        dev.wait_irq(0, timeout_s=1.0)
        dev.bar(0).write32(EDU_INTR_ACK, 0xFFFF)

    _, replayer, _ = replay(path, driver=acks_too_much)
    divergence = replayer.divergence
    # the recorded driver read the status first; this one writes at once
    assert divergence.expected == f"MMIO read32 BAR0+{EDU_INTR_STATUS:#x} -> 0x00000100"
    assert divergence.got == f"MMIO write32 BAR0+{EDU_INTR_ACK:#x} = 0x0000ffff"


def test_recorded_bars_and_dma_buffers_have_no_memoryview(machine, tmp_path):
    with hal.open(EDU, os=machine.os, unbind=True, trace=str(tmp_path / "t.trace")) as dev:
        bar = dev.bar(0)
        assert not hasattr(bar, "u32")
        with pytest.raises(UnsupportedOperation, match="traced"):
            bar.view()
        buffer = dev.alloc_dma(4096)
        with pytest.raises(UnsupportedOperation, match="every access"):
            buffer.region.view()


def test_gpuhal_trace_records_every_open_and_names_the_command(machine, tmp_path, monkeypatch):
    path = tmp_path / "env.trace"
    monkeypatch.setenv(hal_trace.TRACE_ENV, str(path))
    monkeypatch.setattr(hal_trace, "_ENV_REQUESTS", {})
    for _ in range(2):
        with hal.open(EDU, os=machine.os, unbind=True) as dev:
            dev.bar(0).read32(EDU_STATUS)
    first = TraceReader(str(path))
    assert first.header.scenario == "argv" and isinstance(first.header.args["argv"], list)
    # the decoding check of the first bar() call, then the read
    assert [record.op for record in first] == [CFG_READ, CFG_READ, MMIO_READ]
    assert TraceReader(f"{path}.2").records()[-1].op == MMIO_READ


def test_a_program_that_exits_with_the_device_open_leaves_a_complete_trace(tmp_path):
    path = tmp_path / "exit.trace"
    program = (
        "import hal\n"
        "from mockgpu import EDU_BDF, Machine\n"
        f"machine = Machine.default(lock_dir={str(tmp_path)!r})\n"
        f"dev = hal.open('vfio:' + EDU_BDF, os=machine.os, unbind=True, trace={str(path)!r})\n"
        "dev.bar(0).write32(0x4, 1)\n")
    subprocess.run([sys.executable, "-c", program], check=True, cwd=PROJECT, timeout=120)
    records = TraceReader(str(path)).records()  # complete: not cut short
    assert records[-1].op == MMIO_WRITE


def test_the_am_driver_over_usb_records_and_replays(machine, tmp_path):
    """Any backend: the GPU behind the USB bridge, whose DMA window (bridge SRAM) the replay
    offers too, so the driver stages copies through the same share of it."""
    from drivers.am.device import AMConfig, AMDevice
    from mockgpu.amd.firmware_images import write_navi31_set
    from mockgpu.usb import navi31_behind_bridge

    firmware = str(write_navi31_set(tmp_path / "firmware"))
    navi31_behind_bridge(machine, firmware="custom", uas=True)
    path = tmp_path / "usb.trace"
    data = bytes(range(256)) * 20

    def boot_and_copy(pci):
        device = AMDevice(pci, config=AMConfig(firmware_dir=firmware, sdma_timeout_s=1.0))
        sdma = device.block("SDMA")
        target = device.memory.alloc_vram(1 << 16, purpose="copy target")
        sdma.copy_to_vram(target, data, 8)
        back = sdma.copy_from_vram(target, len(data), 8)
        device.fini()
        return back, sdma.staging_bytes

    with hal.open("usb:1-2", os=machine.os, trace=str(path)) as pci:
        recorded = boot_and_copy(pci)
    assert TraceReader(str(path)).header.device["dma_window"] is not None
    result, replayer, error = replay(path, driver=boot_and_copy)
    assert error is None and replayer.divergence is None
    assert result == recorded and result[0] == data


def test_no_trace_without_a_request(machine, tmp_path, monkeypatch):
    monkeypatch.delenv(hal_trace.TRACE_ENV, raising=False)
    with hal.open(EDU, os=machine.os, unbind=True) as dev:
        assert not isinstance(dev.backend, hal_trace.RecordingBackend)


def test_a_failed_operation_is_replayed_as_the_same_error(machine, tmp_path):
    """The sysfs backend refuses interrupts; a driver that falls back to polling replays."""
    path = tmp_path / "pci.trace"

    def falls_back(dev):
        try:
            dev.enable_interrupts("msix", 1)
        except UnsupportedOperation:
            return dev.bar(0).read32(EDU_STATUS)
        return None

    with hal.open(f"pci:{EDU_BDF}", os=machine.os, unbind=True, trace=str(path)) as dev:
        recorded = falls_back(dev)
    result, replayer, error = replay(path, driver=falls_back)
    assert error is None and replayer.divergence is None and result == recorded == 0


@pytest.mark.parametrize("backend, method", [("vfio", "auto"), ("vfio", "flr"), ("pci", "bus"),
                                             ("pci", "flr")])
def test_resets_replay(machine, tmp_path, backend, method):
    """A reset's config accesses, sysfs reads and writes (the bridge above, reset_method, reset)
    and waits are recorded, and replay without a device."""
    path = tmp_path / "reset.trace"

    def resets(dev):
        offered = dev.reset_methods()
        used = dev.reset(method)
        return offered, used, dev.bar(0).read32(EDU_STATUS)

    with hal.open(f"{backend}:{EDU_BDF}", os=machine.os, unbind=True, trace=str(path)) as dev:
        recorded = resets(dev)
    result, replayer, error = replay(path, driver=resets)
    assert error is None and replayer.divergence is None
    assert result == recorded
    records = TraceReader(str(path)).records()
    assert any(record.op == OS_QUERY for record in records)
    if method == "bus":
        # the kernel's bus reset: select it in reset_method, write reset, put the selection back
        changes = [record.describe() for record in records if record.op == OS_CHANGE]
        assert [text.split("(")[0] for text in changes] == ["write_text"] * 3
        assert f"/{EDU_BDF}/reset'" in changes[1]


def test_a_missing_seam_write_diverges(machine, tmp_path):
    path = tmp_path / "reset.trace"
    with hal.open(f"pci:{EDU_BDF}", os=machine.os, unbind=True, trace=str(path)) as dev:
        dev.reset("bus")

    def flr_instead(dev):
        dev.reset("flr")

    _, replayer, error = replay(path, driver=flr_instead)
    assert isinstance(error, hal_trace.TraceDivergence)
    assert replayer.divergence is not None


# -- the polling rule, on hand-made traces ---------------------------------------------------------
REG_A = 0x20
REG_B = 0x24
REG_W = 0x64


def make_trace(path, reads_then_write):
    """A trace of BAR0 reads (offset, value) with a final write of 1 to REG_W."""
    device = {"bdf": "0000:00:00.0", "backend": "test", "vendor_id": 0, "device_id": 0,
              "bars": {"0": [4096, True]}, "config_size": 256, "presence_register": [0, 2],
              "reset_methods": [], "pid": 1}
    writer = TraceWriter(str(path), TraceHeader("test", {}, device))
    # PCIDevice.bar's first call checks that memory decoding is on: BAR0's type bits, then Command
    writer.observe(CFG_READ, (4, pci_regs.PCI_BASE_ADDRESS_0, 0))
    writer.observe(CFG_READ, (2, pci_regs.PCI_COMMAND, pci_regs.PCI_COMMAND_MEMORY))
    for offset, value in reads_then_write:
        writer.observe(MMIO_READ, (0, 4, offset, value))
    writer.act(MMIO_WRITE, (0, 4, REG_W, 1))
    writer.close()
    return path


def run_reads(path, offsets):
    def driver(dev):
        bar = dev.bar(0)
        values = [bar.read32(offset) for offset in offsets]
        bar.write32(REG_W, 1)
        return values
    return replay(path, driver=lambda dev: driver(dev))


def test_identical_reads_are_one_record(tmp_path):
    path = make_trace(tmp_path / "p.trace", [(REG_A, 0)] * 5 + [(REG_A, 1)])
    records = TraceReader(str(path)).records()
    assert [record.count for record in records][2:] == [5, 1, 1]


def test_a_poll_may_take_fewer_reads_on_replay(tmp_path):
    path = make_trace(tmp_path / "p.trace", [(REG_A, 0)] * 5 + [(REG_A, 1)])
    values, replayer, error = run_reads(path, [REG_A, REG_A])
    assert error is None and replayer.divergence is None and values == [0, 1]


def test_a_poll_may_take_more_reads_on_replay(tmp_path):
    path = make_trace(tmp_path / "p.trace", [(REG_A, 0), (REG_B, 7)])
    values, replayer, error = run_reads(path, [REG_A, REG_B, REG_A, REG_B, REG_A])
    assert error is None and replayer.divergence is None and values == [0, 7, 0, 7, 0]


def test_reads_left_over_from_a_poll_are_skipped(tmp_path):
    path = make_trace(tmp_path / "p.trace", [(REG_A, 0), (REG_B, 0), (REG_A, 0), (REG_B, 1)])
    values, replayer, error = run_reads(path, [REG_A, REG_B])
    assert error is None and replayer.divergence is None and values == [0, 0]


def test_reading_another_register_diverges(tmp_path):
    path = make_trace(tmp_path / "p.trace", [(REG_A, 0)])
    _, replayer, error = run_reads(path, [REG_B])
    assert isinstance(error, hal_trace.TraceDivergence)
    assert replayer.divergence.index == 2
    assert replayer.divergence.expected == f"MMIO read32 BAR0+{REG_A:#x} -> 0x00000000"
    assert replayer.divergence.got == f"MMIO read32 BAR0+{REG_B:#x}"


def test_a_run_that_stops_early_diverges_at_finish(tmp_path):
    path = make_trace(tmp_path / "p.trace", [(REG_A, 0)])
    dev, replayer = hal_trace.open_replay(str(path))
    dev.bar(0).read32(REG_A)
    with pytest.raises(hal_trace.TraceDivergence, match="the end of the run"):
        replayer.finish()


def test_replay_waits_do_not_time_out(tmp_path, monkeypatch):
    """The replay clock is virtual: a replay slower than the device (here 20 ms a read against a
    10 ms poll) times nothing out that the recording did not."""
    path = make_trace(tmp_path / "p.trace", [(REG_A, 0), (REG_A, 2), (REG_A, 1)])
    observe = hal_trace.Replayer.observe

    def slow_observe(self, key):
        time.sleep(0.02)
        return observe(self, key)

    monkeypatch.setattr(hal_trace.Replayer, "observe", slow_observe)

    def driver(dev):
        value = dev.poll32(0, REG_A, 1, 1, timeout_s=0.01)
        dev.bar(0).write32(REG_W, 1)
        return value

    value, replayer, error = replay(path, driver=driver)
    assert error is None and value == 1


# -- the format's errors ----------------------------------------------------------------------------
def test_truncated_trace_is_bad_trace_naming_the_offset(tmp_path):
    path = make_trace(tmp_path / "p.trace", [(REG_A, 0)] * 3)
    raw = path.read_bytes()
    path.write_bytes(raw[:-6])
    with pytest.raises(BadTrace, match=f"cut short at byte {len(raw) - 6}") as excinfo:
        TraceReader(str(path)).records()
    assert excinfo.value.offset == len(raw) - 6
    assert isinstance(excinfo.value, BadBinary)


def test_corrupt_stream_is_bad_trace(tmp_path):
    path = make_trace(tmp_path / "p.trace", [(offset, offset) for offset in range(0, 4096, 4)])
    raw = bytearray(path.read_bytes())
    header_end = PREAMBLE.size + struct.unpack_from("<I", raw, 12)[0]
    raw[header_end + 40] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(BadTrace) as excinfo:
        TraceReader(str(path)).records()
    assert excinfo.value.offset >= header_end


def test_other_version_and_not_a_trace(tmp_path):
    path = make_trace(tmp_path / "p.trace", [])
    raw = bytearray(path.read_bytes())
    struct.pack_into("<H", raw, 8, 99)
    path.write_bytes(bytes(raw))
    with pytest.raises(BadTrace, match="version 99") as excinfo:
        TraceReader(str(path))
    assert excinfo.value.offset == 8
    path.write_bytes(b"not a trace at all, clearly")
    with pytest.raises(BadTrace, match="not a gpuhal trace"):
        TraceReader(str(path))


def test_header_crc_is_checked(tmp_path):
    path = make_trace(tmp_path / "p.trace", [])
    raw = bytearray(path.read_bytes())
    raw[PREAMBLE.size + 2] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(BadTrace, match="CRC-32"):
        TraceReader(str(path))


def test_compressed_stream_is_zlib(tmp_path):
    path = make_trace(tmp_path / "p.trace", [(REG_A, 0)])
    raw = path.read_bytes()
    header_end = PREAMBLE.size + struct.unpack_from("<I", raw, 12)[0]
    assert zlib.decompress(raw[header_end:])[-9] == 255  # the END record closes the stream
