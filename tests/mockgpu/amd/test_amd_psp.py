"""The mock PSP (MP0 13.0.0) at the register and memory layer, driven the way psp_v13_0.c and
amdgpu_psp.c drive the hardware: bootloader handshake, SOS sign of life, KM ring, GFX commands."""
from __future__ import annotations

import pytest

from autogen.amd import psp_gfx_if as gfx
from drivers.am import firmware
from mockgpu.amd import Navi31GPU
from mockgpu.amd import psp as model
from mockgpu.amd.firmware_images import build

MIB = 1 << 20
PRIVATE = 16 * MIB  # VRAM offsets this test uses, as amdgpu's buffers would be
RING = 20 * MIB
CMD = RING + 0x1000
FENCE = RING + 0x2000
FIRMWARE = 24 * MIB
TMR = 32 * MIB


@pytest.fixture
def gpu():
    return Navi31GPU(vram_size=256 * MIB)


@pytest.fixture(scope="module")
def sos():
    name = "amdgpu/psp_13_0_0_sos.bin"
    image = firmware.parse_firmware(name, build(name), firmware.KIND_PSP_SOS)
    return {binary.name: bytes(binary.payload) for binary in image.binaries}


def write(gpu, number: int, value: int) -> None:
    gpu.regfile.write32(gpu.regfile.address("MP0", f"regMP0_SMN_C2PMSG_{number}"), value)


def read(gpu, number: int) -> int:
    return gpu.regfile.read32(gpu.regfile.address("MP0", f"regMP0_SMN_C2PMSG_{number}"))


def mc(gpu, offset: int) -> int:
    return gpu.psp.fb_base() + offset


def load_component(gpu, data: bytes, command: int) -> int:
    """psp_v13_0_bootloader_load_component: copy, C2PMSG_36 = MC >> 20, command to C2PMSG_35."""
    assert read(gpu, 35) & model.MBOX_READY
    gpu.vram[PRIVATE:PRIVATE + MIB] = bytes(MIB)
    gpu.vram[PRIVATE:PRIVATE + len(data)] = data
    write(gpu, 36, mc(gpu, PRIVATE) >> 20)
    write(gpu, 35, command)
    return read(gpu, 35)


def boot_sos(gpu, sos) -> None:
    for name, command in (("KDB", model.PSP_BL__LOAD_KEY_DATABASE),
                          ("SPL", model.PSP_BL__LOAD_TOS_SPL_TABLE),
                          ("SYS_DRV", model.PSP_BL__LOAD_SYSDRV), ("SOS", model.PSP_BL__LOAD_SOSDRV)):
        assert load_component(gpu, sos[name], command) == model.MBOX_READY


def create_ring(gpu) -> int:
    assert read(gpu, 64) & model.MBOX_READY
    write(gpu, 69, mc(gpu, RING) & 0xFFFFFFFF)
    write(gpu, 70, mc(gpu, RING) >> 32)
    write(gpu, 71, 0x1000)
    write(gpu, 64, model.PSP_RING_TYPE__KM << 16)
    return read(gpu, 64)


def submit(gpu, cmd: gfx.psp_gfx_cmd_resp, fence: int) -> gfx.psp_gfx_resp:
    """psp_ring_cmd_submit + psp_cmd_submit_buf's wait: a frame at the write pointer, then C2PMSG_67."""
    gpu.vram[CMD:CMD + 0x1000] = bytes(0x1000)
    gpu.vram[CMD:CMD + cmd.SIZE] = bytes(cmd)
    wptr = read(gpu, 67)
    frame = gfx.psp_gfx_rb_frame(cmd_buf_addr_lo=mc(gpu, CMD) & 0xFFFFFFFF,
                                 cmd_buf_addr_hi=mc(gpu, CMD) >> 32,
                                 fence_addr_lo=mc(gpu, FENCE) & 0xFFFFFFFF,
                                 fence_addr_hi=mc(gpu, FENCE) >> 32, fence_value=fence)
    slot = RING + wptr * 4
    gpu.vram[slot:slot + frame.SIZE] = bytes(frame)
    write(gpu, 67, (wptr + frame.SIZE // 4) % (0x1000 // 4))
    return gfx.psp_gfx_cmd_resp.from_bytes(gpu.vram[CMD:CMD + gfx.psp_gfx_cmd_resp.SIZE]).resp


def fence_value(gpu) -> int:
    return int.from_bytes(gpu.vram[FENCE:FENCE + 4], "little")


def load_toc(gpu, sos, fence: int) -> gfx.psp_gfx_resp:
    toc = sos["TOC"]
    gpu.vram[PRIVATE:PRIVATE + len(toc)] = toc
    cmd = gfx.psp_gfx_cmd_resp(cmd_id=gfx.GFX_CMD_ID_LOAD_TOC)
    cmd.cmd.cmd_load_toc.toc_phy_addr_lo = mc(gpu, PRIVATE) & 0xFFFFFFFF
    cmd.cmd.cmd_load_toc.toc_phy_addr_hi = mc(gpu, PRIVATE) >> 32
    cmd.cmd.cmd_load_toc.toc_size = len(toc)
    return submit(gpu, cmd, fence)


def load_ip_fw(gpu, fw_type: int, size: int, fence: int) -> gfx.psp_gfx_resp:
    cmd = gfx.psp_gfx_cmd_resp(cmd_id=gfx.GFX_CMD_ID_LOAD_IP_FW)
    cmd.cmd.cmd_load_ip_fw.fw_phy_addr_lo = mc(gpu, FIRMWARE) & 0xFFFFFFFF
    cmd.cmd.cmd_load_ip_fw.fw_phy_addr_hi = mc(gpu, FIRMWARE) >> 32
    cmd.cmd.cmd_load_ip_fw.fw_size = size
    cmd.cmd.cmd_load_ip_fw.fw_type = fw_type
    return submit(gpu, cmd, fence)


def setup_tmr(gpu, offset: int, size: int, fence: int) -> gfx.psp_gfx_resp:
    cmd = gfx.psp_gfx_cmd_resp(cmd_id=gfx.GFX_CMD_ID_SETUP_TMR)
    args = cmd.cmd.cmd_setup_tmr
    args.buf_phy_addr_lo = mc(gpu, offset) & 0xFFFFFFFF
    args.buf_phy_addr_hi = mc(gpu, offset) >> 32
    args.buf_size = size
    args.bitfield.virt_phy_addr = 1
    args.system_phy_addr_lo = offset
    return submit(gpu, cmd, fence)


# -- bootloader ------------------------------------------------------------------------------------
def test_power_on_the_bootloader_is_ready_and_no_sos_runs(gpu):
    assert read(gpu, 35) == model.MBOX_READY
    assert read(gpu, 81) == 0
    write(gpu, 64, model.PSP_RING_TYPE__KM << 16)
    assert not read(gpu, 64) & model.MBOX_READY  # no SOS: nobody answers the ring mailbox


def test_the_kernels_component_order_boots_the_sos_and_its_sign_of_life_keeps_changing(gpu, sos):
    boot_sos(gpu, sos)
    first = read(gpu, 81)
    assert first != 0
    assert read(gpu, 81) != first  # psp_v13_0_bootloader_load_sos waits for C2PMSG_81 to change
    assert read(gpu, 58) == 0x310025  # C2PMSG_58: the SOS version from its image header
    assert read(gpu, 64) == model.MBOX_READY  # ready for ring creation


def test_spl_command_takes_the_key_database_image_as_amdgpu_sends_it(gpu, sos):
    # psp_v13_0_bootloader_load_spl hands over psp->kdb with PSP_BL__LOAD_TOS_SPL_TABLE
    assert load_component(gpu, sos["KDB"], model.PSP_BL__LOAD_KEY_DATABASE) == model.MBOX_READY
    assert load_component(gpu, sos["KDB"], model.PSP_BL__LOAD_TOS_SPL_TABLE) == model.MBOX_READY


def test_components_out_of_order_are_refused_with_the_error_in_bits_7_0(gpu, sos):
    assert load_component(gpu, sos["SYS_DRV"], model.PSP_BL__LOAD_SYSDRV) == model.MBOX_READY
    status = load_component(gpu, sos["KDB"], model.PSP_BL__LOAD_KEY_DATABASE)
    assert status == model.MBOX_READY | model.BL_ERROR_BAD_ORDER
    fresh = Navi31GPU(vram_size=256 * MIB)
    status = load_component(fresh, sos["SOS"], model.PSP_BL__LOAD_SOSDRV)  # no SYS_DRV to run on
    assert status == model.MBOX_READY | model.BL_ERROR_BAD_ORDER
    assert read(fresh, 81) == 0


def test_a_component_with_a_bad_image_header_or_outside_vram_is_refused(gpu, sos):
    kdb = bytearray(sos["KDB"])
    kdb[model.IMAGE_TOTAL_SIZE_OFFSET] ^= 0x10  # the size no longer covers header, body, signature
    status = load_component(gpu, bytes(kdb), model.PSP_BL__LOAD_KEY_DATABASE)
    assert status == model.MBOX_READY | model.BL_ERROR_BAD_IMAGE
    write(gpu, 36, (gpu.psp.fb_base() + gpu.vram_size) >> 20)
    write(gpu, 35, model.PSP_BL__LOAD_KEY_DATABASE)
    assert read(gpu, 35) == model.MBOX_READY | model.BL_ERROR_BAD_ADDRESS


def test_the_real_sos_images_pass_the_bootloader_checks():
    root = firmware.search_path()[-1]
    path = firmware.find_file("amdgpu/psp_13_0_0_sos.bin", [root])
    if path is None:
        pytest.skip(f"the pinned firmware is not cached ({firmware.FETCH_COMMAND})")
    image = firmware.parse_firmware(path.name, firmware.read_file(path), firmware.KIND_PSP_SOS)
    for binary in image.binaries:
        assert model.check_image(binary.payload, model.PSP_1_MEG) == binary.size


def test_a_hung_bootloader_never_answers(gpu, sos):
    gpu.psp.hang = True
    write(gpu, 36, mc(gpu, PRIVATE) >> 20)
    write(gpu, 35, model.PSP_BL__LOAD_KEY_DATABASE)
    assert read(gpu, 35) == 0


# -- KM ring and GFX commands ----------------------------------------------------------------------
def test_ring_create_answers_ready_and_refuses_a_misaligned_ring(gpu):
    gpu.psp.start_sos()
    write(gpu, 69, mc(gpu, RING + 0x40) & 0xFFFFFFFF)
    write(gpu, 70, mc(gpu, RING) >> 32)
    write(gpu, 71, 0x1000)
    write(gpu, 64, model.PSP_RING_TYPE__KM << 16)
    assert read(gpu, 64) == model.MBOX_READY | (model.TEE_ERROR_BAD_PARAMETERS & gfx.GFX_CMD_STATUS_MASK)
    assert create_ring(gpu) == model.MBOX_READY
    write(gpu, 64, gfx.GFX_CTRL_CMD_ID_DESTROY_RINGS)
    assert read(gpu, 64) == model.MBOX_READY and gpu.psp.ring is None


def test_load_toc_answers_the_tmr_size_and_the_firmware_goes_in_amdgpus_order(gpu, sos):
    gpu.psp.start_sos()
    assert create_ring(gpu) == model.MBOX_READY
    resp = load_toc(gpu, sos, 1)
    assert fence_value(gpu) == 1 and resp.status == gfx.TEE_SUCCESS
    assert resp.tmr_size == gpu.psp.toc_tmr_size
    # psp_hw_start on MP0 13.0.0: the SMU firmware before SETUP_TMR; the PMFW then runs
    assert not gpu.smu.running
    assert load_ip_fw(gpu, gfx.GFX_FW_TYPE_SMU, 0x1000, 2).status == gfx.TEE_SUCCESS
    assert gpu.smu.running
    assert setup_tmr(gpu, TMR, resp.tmr_size, 3).status == gfx.TEE_SUCCESS
    assert load_ip_fw(gpu, gfx.GFX_FW_TYPE_RLC_G, 0x2000, 4).status == gfx.TEE_SUCCESS
    assert submit(gpu, gfx.psp_gfx_cmd_resp(cmd_id=gfx.GFX_CMD_ID_AUTOLOAD_RLC), 5).status == gfx.TEE_SUCCESS
    assert gpu.psp.autoload_started
    assert gpu.psp.loaded[gfx.GFX_FW_TYPE_RLC_G].size == 0x2000
    assert load_ip_fw(gpu, gfx.GFX_FW_TYPE_SDMA_UCODE_TH0, 0x1000, 6).status == gfx.TEE_SUCCESS
    assert not gpu.sdma.firmware_loaded  # both threads first
    assert load_ip_fw(gpu, gfx.GFX_FW_TYPE_SDMA_UCODE_TH1, 0x1000, 7).status == gfx.TEE_SUCCESS
    assert gpu.sdma.firmware_loaded
    assert fence_value(gpu) == 7


def test_wrong_order_and_malformed_commands_get_the_real_statuses(gpu, sos):
    gpu.psp.start_sos()
    create_ring(gpu)
    assert load_ip_fw(gpu, gfx.GFX_FW_TYPE_RLC_G, 0x1000, 1).status == model.TEE_ERROR_BAD_STATE  # no TOC
    tmr_size = load_toc(gpu, sos, 2).tmr_size
    assert load_ip_fw(gpu, gfx.GFX_FW_TYPE_RLC_G, 0x1000, 3).status == model.TEE_ERROR_BAD_STATE  # no TMR
    cmd = gfx.psp_gfx_cmd_resp(cmd_id=gfx.GFX_CMD_ID_AUTOLOAD_RLC)
    assert submit(gpu, cmd, 4).status == model.TEE_ERROR_BAD_STATE
    assert setup_tmr(gpu, TMR + 0x1000, tmr_size, 5).status == model.TEE_ERROR_BAD_PARAMETERS  # misaligned
    assert setup_tmr(gpu, TMR, tmr_size - MIB, 6).status == model.TEE_ERROR_BAD_PARAMETERS  # too small
    assert setup_tmr(gpu, TMR, tmr_size, 7).status == gfx.TEE_SUCCESS
    assert setup_tmr(gpu, TMR, tmr_size, 8).status == model.TEE_ERROR_BAD_STATE  # twice
    assert load_ip_fw(gpu, gfx.GFX_FW_TYPE_VCN, 0x1000, 9).status == gfx.TEE_ERROR_NOT_SUPPORTED
    assert submit(gpu, gfx.psp_gfx_cmd_resp(cmd_id=0x7F), 10).status == gfx.PSP_ERR_UNKNOWN_COMMAND
    assert fence_value(gpu) == 10  # every frame is answered through its fence


def test_fault_hooks_fail_a_command_or_never_answer(gpu, sos):
    gpu.psp.start_sos()
    create_ring(gpu)
    gpu.psp.fail_commands[gfx.GFX_CMD_ID_LOAD_TOC] = model.TEE_ERROR_BAD_FORMAT
    assert load_toc(gpu, sos, 1).status == model.TEE_ERROR_BAD_FORMAT
    gpu.psp.hang = True
    load_toc(gpu, sos, 2)
    assert fence_value(gpu) == 1


def test_mode1_and_power_on_stop_the_sos_a_pci_reset_keeps_it(gpu, sos):
    boot_sos(gpu, sos)
    create_ring(gpu)
    gpu.reset_device_state()  # FLR / bus reset
    assert read(gpu, 81) != 0 and gpu.psp.ring is not None
    gpu.psp.reset("mode1")
    assert read(gpu, 81) == 0 and read(gpu, 35) == model.MBOX_READY and gpu.psp.ring is None
    with pytest.raises(ValueError):
        gpu.psp.reset("warm")
