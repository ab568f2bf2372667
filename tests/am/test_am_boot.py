"""The AM boot layout against the mock Navi31: cold boot end to end, warm attach from a second
process, a crashed owner detected and reset, a corrupt layout, the flags and the layout format."""
from __future__ import annotations

import dataclasses
import logging

import pytest

import hal
from autogen.amd import psp_gfx_if as gfx
from drivers.am import boot, reset
from drivers.am.device import BLOCK_ORDER, AMConfig, AMDevice
from hal.errors import BadBinary
from mockgpu import GPU_BDF, Machine

GPU = f"pci:{GPU_BDF}"
DEAD_PID = 0x7FFFFFF0  # above pid_max (include/linux/threads.h PID_MAX_LIMIT, 4 Mi): never runs
CONFIG = dict(sdma_timeout_s=0.3, smu_mode1_wait_s=0.02, smu_mode1_ready_timeout_s=0.5)


@pytest.fixture
def machine(tmp_path):
    return Machine.default(lock_dir=str(tmp_path))


@pytest.fixture
def gpu(machine):
    return machine.device(GPU_BDF)


def open_device(machine, **config):
    pci = hal.open(GPU, os=machine.os, unbind=True)
    return pci, AMDevice(pci, config=AMConfig(**{**CONFIG, **config}))


def layout_of(gpu) -> boot.Layout:
    start = boot.LAYOUT_OFFSET
    return boot.decode(bytes(gpu.vram[start:start + boot.LAYOUT_SIZE]))


def rewrite_layout(gpu, **changes) -> None:
    """Change the recorded layout in VRAM (checksum kept valid), as a previous owner left it."""
    blob = dataclasses.replace(layout_of(gpu), **changes).encode()
    gpu.vram[boot.LAYOUT_OFFSET:boot.LAYOUT_OFFSET + len(blob)] = blob


def copy_works(dev) -> bool:
    sdma = dev.block("SDMA")
    source = dev.memory.alloc_vram(4096, purpose="source")
    destination = dev.memory.alloc_vram(4096, purpose="destination")
    payload = bytes(range(256)) * 16
    source.view.write(0, payload)
    sdma.wait(sdma.copy(destination.mc_address, source.mc_address, len(payload)))
    ok = destination.view.read(0, len(payload)) == payload
    dev.memory.free_vram(source)
    dev.memory.free_vram(destination)
    return ok


def test_cold_boot_end_to_end_records_the_layout_and_sets_the_flags(machine, gpu):
    pci, dev = open_device(machine)
    assert dev.boot_kind == "cold"
    assert [block.block for block in dev.hw_done] == list(BLOCK_ORDER)
    assert gpu.psp.loaded_components and gpu.psp.autoload_started and gpu.smu.running
    assert copy_works(dev)
    layout = layout_of(gpu)
    assert layout.state is boot.State.UP and layout.owner_pid == machine.os.getpid()
    assert layout.blocks == BLOCK_ORDER
    assert set(layout.slots) == {name for name, _, _ in boot.SLOTS}
    psp = dev.block("PSP")
    assert layout.slots["psp.ring"] == (psp.ring_buffer.mc_address, psp.ring_buffer.size)
    assert layout.slots["psp.tmr"] == gpu.psp.tmr
    assert layout.firmware == {name: image.sha256 for name, image in psp.firmware.items()}
    recorded = {(item.offset, item.size, item.purpose) for item in layout.allocations}
    assert recorded == {(b.offset, b.size, b.purpose) for b in dev.memory.buffers()}
    assert boot.read_flags(dev.registers) == (boot.LAYOUT_OFFSET, layout.generation)
    # the layout is kept out of the allocator: no buffer overlaps it
    for buffer in dev.memory.buffers():
        assert buffer.offset >= boot.LAYOUT_OFFSET + boot.LAYOUT_SIZE or \
            buffer.offset + buffer.size <= boot.LAYOUT_OFFSET
    # a read-only tool finds the same layout through the flags
    assert boot.find(dev.registers, dev.vram) == layout
    dev.fini()
    assert boot.read_flags(dev.registers) is None  # a full teardown leaves nothing to attach to
    assert layout_of(gpu).state is boot.State.DOWN_CLEAN
    pci.close()


def test_a_second_process_attaches_warm_without_reloading_psp_or_smu(machine, gpu):
    pci, first = open_device(machine)
    generation = layout_of(gpu).generation
    ring = first.block("PSP").ring_buffer.mc_address
    sdma_ring = first.block("SDMA").ring.mc_address
    pci.close()  # the process exits: no teardown
    components = list(gpu.psp.loaded_components)
    commands = list(gpu.psp.commands)
    pci, second = open_device(machine)
    assert second.boot_kind == "warm", second.boot_reason
    assert gpu.psp.loaded_components == components  # no bootloader
    assert gpu.psp.commands == commands  # no LOAD_TOC, SETUP_TMR, LOAD_IP_FW
    assert gpu.psp.ring == (ring, 0x1000) and gpu.psp.errors == []
    assert gpu.smu.running
    psp = second.block("PSP")
    assert psp.ring_buffer.mc_address == ring and psp.tmr.mc_address == gpu.psp.tmr[0]
    assert second.block("SDMA").ring.mc_address == sdma_ring
    assert copy_works(second)
    # the PSP ring still works: its fence continues from the previous owner's
    fence = psp.fence_value
    psp.submit(gfx.GFX_CMD_ID_AUTOLOAD_RLC)
    assert psp.fence_value == fence + 1 and gpu.psp.commands[-1] == (gfx.GFX_CMD_ID_AUTOLOAD_RLC, 0)
    layout = layout_of(gpu)
    assert layout.state is boot.State.UP and layout.generation == generation
    second.fini()
    assert gpu.psp.tmr is None and gpu.psp.errors == []  # DESTROY_TMR found the warm TMR
    pci.close()


def test_a_detached_owner_whose_process_is_gone_is_attached_warm(machine, gpu):
    pci, first = open_device(machine)
    first.detach()  # what the exit hook does
    pci.close()
    rewrite_layout(gpu, owner_pid=DEAD_PID)
    assert layout_of(gpu).state is boot.State.DOWN_CLEAN
    reset_count = gpu.state.reset_count
    pci, second = open_device(machine)
    assert second.boot_kind == "warm" and gpu.state.reset_count == reset_count
    second.fini()
    pci.close()


@pytest.mark.parametrize("state", [boot.State.UP, boot.State.BOOTING, boot.State.SHUTTING_DOWN])
def test_a_crashed_owner_is_detected_then_mode1_then_a_cold_boot(machine, gpu, state, caplog):
    pci, first = open_device(machine)
    generation = layout_of(gpu).generation
    pci.close()  # killed: no teardown, no detach
    rewrite_layout(gpu, owner_pid=DEAD_PID, state=state)
    reset_count = gpu.state.reset_count
    mode1s = []
    gpu.smu.on_mode1 = lambda: mode1s.append(True)
    with caplog.at_level(logging.WARNING, logger="drivers.am.device"):
        pci, second = open_device(machine)
    assert second.boot_kind == "reset"
    assert f"pid {DEAD_PID}" in second.boot_reason and "mode1" in caplog.text
    assert mode1s == [True] and gpu.state.reset_count == reset_count + 1
    # a cold boot after the reset: the bootloader ran again, and the PSP took everything
    assert gpu.psp.loaded_components[-1] == 0x20000 and gpu.psp.errors == []  # PSP_BL__LOAD_SOSDRV
    layout = layout_of(gpu)
    assert layout.generation == generation + 1 and layout.state is boot.State.UP
    assert copy_works(second)
    second.fini()
    pci.close()


def test_a_corrupt_layout_header_is_ignored_with_a_warning_and_the_gpu_reset(machine, gpu, caplog):
    pci, first = open_device(machine)
    pci.close()
    gpu.vram[boot.LAYOUT_OFFSET + 40] ^= 0xFF  # a byte of the body: the checksum no longer matches
    mode1s = []
    gpu.smu.on_mode1 = lambda: mode1s.append(True)
    with caplog.at_level(logging.WARNING, logger="drivers.am.device"):
        pci, second = open_device(machine)
    assert second.boot_kind == "reset" and "corrupt" in caplog.text and "checksum" in caplog.text
    assert mode1s == [True]
    assert layout_of(gpu).state is boot.State.UP  # written anew
    second.fini()
    pci.close()


def test_changed_firmware_refuses_the_warm_attach(machine, gpu, caplog):
    pci, first = open_device(machine)
    pci.close()
    rewrite_layout(gpu, firmware={**layout_of(gpu).firmware, "amdgpu/smu_13_0_0.bin": "00" * 32})
    with caplog.at_level(logging.WARNING, logger="drivers.am.device"):
        pci, second = open_device(machine)
    assert second.boot_kind == "reset" and "smu_13_0_0.bin" in caplog.text
    assert gpu.psp.errors == []
    second.fini()
    pci.close()


def test_a_reset_clears_the_flags_so_the_next_owner_boots_cold(machine, gpu):
    pci, first = open_device(machine)
    pci.close()
    with hal.open(GPU, os=machine.os, unbind=True) as pci:  # tools.reset_gpu's mode1
        reset.mode1_reset_pci(pci, timeout_s=0.5)
    pci, second = open_device(machine)
    assert second.boot_kind == "cold" and "no boot layout flags" in second.boot_reason
    second.fini()
    pci.close()


def test_layout_round_trip_and_corruption():
    layout = boot.Layout(7, boot.State.UP, 1234, ("NBIO", "PSP"), {"psp.ring": (0x80_0000_0000, 4096)},
                         {"amdgpu/a.bin": "ab" * 32}, (boot.Allocation(0x900000, 4096, "psp ring"),))
    blob = layout.encode()
    assert boot.decode(blob + bytes(100)) == layout
    # the size's third byte: 8 MiB more than any layout holds, whatever the size is
    for position, match in ((0, "magic"), (8, "version"), (14, "size"), (30, "checksum")):
        broken = bytearray(blob)
        broken[position] ^= 0x01 if position != 14 else 0x80
        with pytest.raises(BadBinary, match=match):
            boot.decode(bytes(broken))
    with pytest.raises(BadBinary, match="do not fit"):
        boot.Layout(1, boot.State.UP, 1, allocations=(boot.Allocation(0, 4096, "x"),) * 2000).encode()
