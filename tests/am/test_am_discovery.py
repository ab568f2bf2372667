"""AM bring-up on the mock Navi31: IP discovery, the register accessor, NBIO/HDP, the block lifecycle."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hal
from autogen.amd import discovery as d
from autogen.amd.regs import gc_11_0_0, nbio_4_3_0
from autogen.regs import UnknownRegister
from drivers.am import discovery
from drivers.am.device import BLOCK_ORDER, IMPLEMENTATIONS, AMConfig, AMDevice
from drivers.am.ip import IPBlock
from drivers.am.nbio import MMIO_REG_HOLE_OFFSET
from drivers.am.regs import PRE_DISCOVERY_BLOCKS, Registers, VRAMWindow
from hal.errors import BadBinary, DeviceLost, DeviceTimeout, InvalidArgument, UnsupportedOperation
from mockgpu import GPU_BDF, Machine
from mockgpu.amd import Navi31GPU
from mockgpu.amd.discovery_table import NAVI31_IPS, build_table, checksum, table_offset
from mockgpu.ports import RootPort

GIB = 1 << 30
GPU = f"pci:{GPU_BDF}"


@pytest.fixture
def machine(tmp_path):
    return Machine.default(lock_dir=str(tmp_path))


def small_machine(tmp_path, vram_size: int) -> tuple[Machine, str]:
    """A machine with one GPU of `vram_size` bytes of VRAM behind a root port."""
    m = Machine(lock_dir=str(tmp_path))
    m.add_device(RootPort(), "0000:00:01.0")
    bdf = "0000:01:00.0"
    m.add_device(Navi31GPU(vram_size=vram_size), bdf, "0000:00:01.0")
    return m, bdf


# -- discovery ------------------------------------------------------------------------------------
def test_bring_up_discovers_the_ips_the_model_lists(machine):
    gpu = machine.device(GPU_BDF)
    with hal.open(GPU, os=machine.os, unbind=True) as pci:
        dev = AMDevice(pci)
        assert dev.vram_size == gpu.vram_size
        found = {(ip.block, ip.instance): (ip.version, ip.bases) for ip in dev.discovery.ips()}
        assert found == {(e.block, e.instance): (e.version, e.bases) for e in NAVI31_IPS}
        assert dev.discovery.find("NBIO").hw_name == "NBIF"  # amdgpu's hw_id_map: NBIO is NBIF_HWID
        assert dev.discovery.gc_info_version == (2, 1)
        assert dev.discovery.gc_info["gc_num_se"] == 6
        assert [block.block for block in dev.blocks] == list(BLOCK_ORDER)
        dev.fini()


def test_64_bit_bases_keep_their_low_30_bits_like_amdgpu():
    high = 0x1_0000_0000 | 0xC000_0000
    ips = tuple(type(e)(e.block, e.hw_id, e.instance, e.version, tuple(b | high for b in e.bases))
                for e in NAVI31_IPS)
    parsed = discovery.parse(build_table(ips, base_addr_64_bit=True))
    gc = parsed.find("GC")
    assert parsed.base_addr_64_bit
    assert gc.bases == NAVI31_IPS[0].bases
    assert gc.bases_64 == tuple(b | high for b in NAVI31_IPS[0].bases)


def _fix_binary_checksum(blob: bytearray) -> None:
    header = d.binary_header.from_buffer(blob)
    start = d.binary_header.offset_of("binary_size")
    header.binary_checksum = checksum(blob[start:header.binary_size])


def _corrupt(field: str) -> bytearray:
    blob = bytearray(build_table())
    header = d.binary_header.from_buffer(blob)
    ip_offset = header.table_list[d.IP_DISCOVERY].offset
    if field == "signature":
        header.binary_signature = 0x12345678
    elif field == "binary checksum":
        blob[header.binary_size - 1] ^= 0x5A
    elif field == "ip checksum":
        blob[ip_offset + d.ip_discovery_header.SIZE + 1] ^= 0x01  # inside die 0's header
        _fix_binary_checksum(blob)
    elif field == "ip signature":
        d.ip_discovery_header.from_buffer(blob, ip_offset).signature = 0
        _fix_binary_checksum(blob)
    elif field == "gc version":
        gc = d.gpu_info_header.from_buffer(blob, header.table_list[d.GC].offset)
        gc.version_major = 7
        header.table_list[d.GC].checksum = checksum(blob[header.table_list[d.GC].offset:][:gc.size])
        _fix_binary_checksum(blob)
    return blob


@pytest.mark.parametrize("field, message", [
    ("signature", "binary_header.binary_signature is 0x12345678"),
    ("binary checksum", "binary_header.binary_checksum checksum"),
    ("ip checksum", "table_list[IP_DISCOVERY].checksum"),
    ("ip signature", "ip_discovery_header.signature is 0x00000000"),
    ("gc version", "gc_info version 7.1 is not one this driver reads"),
])
def test_a_corrupt_table_names_the_field(field, message):
    with pytest.raises(BadBinary, match=message.replace("[", r"\[").replace("]", r"\]")):
        discovery.parse(_corrupt(field))


@pytest.mark.parametrize("length", [0, 10, d.binary_header.SIZE, 200])
def test_a_truncated_table_is_bad_binary(length):
    with pytest.raises(BadBinary, match="truncated"):
        discovery.parse(build_table()[:length])


def test_a_corrupt_table_in_vram_stops_bring_up(machine):
    machine.device(GPU_BDF).write_discovery_table(bytes(_corrupt("ip checksum")))
    with hal.open(GPU, os=machine.os, unbind=True) as pci:
        with pytest.raises(BadBinary, match=r"IP_DISCOVERY\].checksum.*read from VRAM offset"):
            AMDevice(pci)


def test_the_ifwi_wait_is_bounded_and_names_the_register(machine):
    machine.device(GPU_BDF).regfile.set("MP0", "regMP0_SMN_C2PMSG_33", 0)
    with hal.open(GPU, os=machine.os, unbind=True) as pci:
        with pytest.raises(DeviceTimeout, match=r"MP0 regMP0_SMN_C2PMSG_33 .*\(last value 0x00000000\)"):
            AMDevice(pci, config=AMConfig(ifwi_timeout_s=0.02))


def test_pre_discovery_addresses_are_the_ones_amdgpu_hardcodes():
    # amdgpu_discovery.c: mmRCC_CONFIG_MEMSIZE 0xde3, mmMM_INDEX 0, mmMM_DATA 1, mmMM_INDEX_HI 6,
    # mmMP0_SMN_C2PMSG_33 0x16061 (dword addresses)
    registers = Registers(_NoBar(), PRE_DISCOVERY_BLOCKS)
    dword = {name: registers.address(block, name) // 4 for block, name in [
        ("NBIO", "regRCC_DEV0_EPF0_RCC_CONFIG_MEMSIZE"), ("NBIO", "regBIF_BX_PF0_MM_INDEX"),
        ("NBIO", "regBIF_BX_PF0_MM_DATA"), ("NBIO", "regBIF_BX_PF0_MM_INDEX_HI"),
        ("MP0", "regMP0_SMN_C2PMSG_33")]}
    assert list(dword.values()) == [0xDE3, 0x0, 0x1, 0x6, 0x16061]


class _NoBar:
    size = 1 << 20


# -- register accessor ------------------------------------------------------------------------------
def test_register_accessor_reads_and_writes_the_model_by_name(machine):
    gpu = machine.device(GPU_BDF)
    with hal.open(GPU, os=machine.os, unbind=True) as pci:
        dev = AMDevice(pci)
        scratch = dev.registers.reg("GC", "regSCRATCH_REG0")
        assert scratch is dev.registers.reg("GC", "regSCRATCH_REG0")  # bound once
        gc_segments = dict((e.block, e.bases) for e in NAVI31_IPS)["GC"]
        assert scratch.address == (gc_segments[gc_11_0_0.regSCRATCH_REG0.base_idx]
                                   + gc_11_0_0.regSCRATCH_REG0.offset) * 4
        scratch.write(0xCAFE0001)
        assert gpu.regfile.get("GC", "regSCRATCH_REG0") == 0xCAFE0001
        assert scratch.read() == 0xCAFE0001
        index = dev.registers.reg("NBIO", "regBIF_BX_PF0_MM_INDEX")
        assert index.update(MM_APER=1) == 0x80000000 | index.read_field("MM_OFFSET")
        assert index.decode()["MM_APER"] == 1
        with pytest.raises(UnknownRegister, match="did you mean regSCRATCH_REG"):
            dev.registers.reg("GC", "regSCRATCH_REGO")
        with pytest.raises(InvalidArgument, match="no VCN block was discovered"):
            dev.registers.reg("VCN", "regUVD_STATUS")
        dev.fini()


def test_registers_past_the_bar_go_through_the_mm_index_window(machine):
    gpu = machine.device(GPU_BDF)
    with hal.open(GPU, os=machine.os, unbind=True) as pci:
        pci.enable_bus_master()
        mmio = pci.bar(5)
        far_base = (mmio.size // 4) + 0x1000  # a segment that starts past the end of BAR5
        blocks = {"NBIO": PRE_DISCOVERY_BLOCKS["NBIO"], "GC": ((11, 0, 0), ((0x1260, far_base),))}
        registers = Registers(mmio, blocks)
        scratch = registers.reg("GC", "regSCRATCH_REG1")
        assert scratch.address >= mmio.size
        scratch.write(0x600DF00D)
        assert gpu.regfile.peek(scratch.address) == 0x600DF00D
        assert scratch.read() == 0x600DF00D


def test_a_vanished_device_raises_device_lost_on_the_first_read(machine):
    gpu = machine.device(GPU_BDF)
    with hal.open(GPU, os=machine.os, unbind=True) as pci:
        dev = AMDevice(pci)
        scratch = dev.registers.reg("GC", "regSCRATCH_REG0")
        scratch.write(1)
        gpu.vanish()
        with pytest.raises(DeviceLost):
            scratch.read()
        assert pci.lost


# -- VRAM windows ---------------------------------------------------------------------------------
def test_the_mm_index_window_reads_the_bytes_bar0_shows(machine):
    gpu = machine.device(GPU_BDF)
    pattern = bytes(range(256)) * 16
    gpu.vram[0x10000:0x10000 + len(pattern)] = pattern
    with hal.open(GPU, os=machine.os, unbind=True) as pci:
        dev = AMDevice(pci)
        bar0 = pci.bar(0)
        narrow = VRAMWindow(bar0.sub(0, 0x1000), dev.registers)  # forces the window past 4 KiB
        assert narrow.read(0x10000, len(pattern)) == bar0.read(0x10000, len(pattern)) == pattern
        narrow.write(0x20000, b"\x01\x02\x03\x04" * 4)
        assert bar0.read(0x20000, 16) == b"\x01\x02\x03\x04" * 4
        # the table itself sits past the 256 MiB BAR0, so bring-up read it through the window too
        top = table_offset(gpu.vram_size)
        assert dev.vram.read(top, 64) == bytes(gpu.vram[top:top + 64])
        dev.fini()


def test_a_resized_bar0_reads_the_table_directly(tmp_path):
    m, bdf = small_machine(tmp_path, 1 * GIB)
    gpu = m.device(bdf)
    with hal.open(f"pci:{bdf}", os=m.os, unbind=True, bar_sizes={0: 1 * GIB}) as pci:
        assert pci.bar(0).size == gpu.vram_size
        dev = AMDevice(pci, block_order=("NBIO", "HDP"))  # later blocks reach registers past BAR5
        assert dev.discovery.find("GC").version == (11, 0, 0)
        assert gpu.regfile.get("NBIO", "regBIF_BX_PF0_MM_INDEX") == 0  # the window was not used
        dev.fini()


# -- NBIO / HDP -----------------------------------------------------------------------------------
def test_nbio_hw_init_and_fini_program_the_doorbell_aperture_and_bus_mastering(machine):
    gpu = machine.device(GPU_BDF)
    with hal.open(GPU, os=machine.os, unbind=True) as pci:
        dev = AMDevice(pci)
        assert gpu.doorbell_aperture_enabled and gpu.bus_master_enabled()
        remap = gpu.regfile.get("NBIO", "regBIF_BX0_REMAP_HDP_MEM_FLUSH_CNTL")
        assert remap == MMIO_REG_HOLE_OFFSET
        flushes = gpu.hdp_flushes  # later blocks flush during their bring-up
        dev.block("HDP").flush()
        dev.block("HDP").flush()
        assert gpu.hdp_flushes == flushes + 2
        dev.fini()
        assert not gpu.doorbell_aperture_enabled and not gpu.bus_master_enabled()


# -- lifecycle -------------------------------------------------------------------------------------
def _recording_blocks(calls: list[str], fail: str | None):
    def make(block_name: str, version: tuple[int, int, int]):
        class Recorder(IPBlock):
            block = block_name
            versions = (version,)

            def _step(self, step: str) -> None:
                calls.append(f"{step} {self.block}")
                if fail == f"{step} {self.block}":
                    raise RuntimeError(f"{step} of {self.block} failed")

            def sw_init(self) -> None:
                self._step("sw_init")

            def hw_init(self) -> None:
                self._step("hw_init")

            def hw_fini(self) -> None:
                self._step("hw_fini")

            def sw_fini(self) -> None:
                self._step("sw_fini")
        return Recorder
    return (make("NBIO", (4, 3, 0)), make("HDP", (6, 0, 0)), make("GC", (11, 0, 0)))


def test_a_failing_hw_init_tears_down_only_what_succeeded(machine):
    calls: list[str] = []
    with hal.open(GPU, os=machine.os, unbind=True) as pci:
        with pytest.raises(RuntimeError, match="hw_init of GC failed"):
            AMDevice(pci, block_order=("NBIO", "HDP", "GC"),
                     implementations=_recording_blocks(calls, "hw_init GC"))
    assert calls == ["sw_init NBIO", "sw_init HDP", "sw_init GC",
                     "hw_init NBIO", "hw_init HDP", "hw_init GC",
                     "hw_fini HDP", "hw_fini NBIO",
                     "sw_fini GC", "sw_fini HDP", "sw_fini NBIO"]


def test_a_failing_sw_init_runs_no_hw_step(machine):
    calls: list[str] = []
    with hal.open(GPU, os=machine.os, unbind=True) as pci:
        with pytest.raises(RuntimeError, match="sw_init of HDP failed"):
            AMDevice(pci, block_order=("NBIO", "HDP", "GC"),
                     implementations=_recording_blocks(calls, "sw_init HDP"))
    assert calls == ["sw_init NBIO", "sw_init HDP", "sw_fini NBIO"]


def test_fini_runs_every_step_once_in_reverse(machine):
    calls: list[str] = []
    with hal.open(GPU, os=machine.os, unbind=True) as pci:
        dev = AMDevice(pci, block_order=("NBIO", "HDP", "GC"),
                       implementations=_recording_blocks(calls, None))
        calls.clear()
        dev.fini()
        dev.fini()
    assert calls == ["hw_fini GC", "hw_fini HDP", "hw_fini NBIO",
                     "sw_fini GC", "sw_fini HDP", "sw_fini NBIO"]


def test_an_unknown_ip_version_is_named_with_the_known_ones(machine):
    only_nbio = tuple(cls for cls in IMPLEMENTATIONS if cls.block == "NBIO")
    with hal.open(GPU, os=machine.os, unbind=True) as pci:
        with pytest.raises(UnsupportedOperation, match=r"HDP 6\.0\.0 has no implementation .*known HDP "
                                                       r"versions: none"):
            AMDevice(pci, implementations=only_nbio)
    gpu = machine.device(GPU_BDF)
    assert gpu.regfile.get("NBIO", "regRCC_DEV0_EPF0_RCC_DOORBELL_APER_EN") == 0  # nothing ran


def test_nbio_register_names_exist_in_the_generated_header():
    for name in ("regRCC_DEV0_EPF0_RCC_CONFIG_MEMSIZE", "regRCC_DEV0_EPF0_RCC_DOORBELL_APER_EN",
                 "regBIF_BX0_REMAP_HDP_MEM_FLUSH_CNTL", "regBIF_BX0_REMAP_HDP_REG_FLUSH_CNTL"):
        assert name in nbio_4_3_0.names()


# -- fuzzing ---------------------------------------------------------------------------------------
@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(min_value=0, max_value=len(build_table()) - 1),
                          st.integers(min_value=0, max_value=255)), min_size=1, max_size=8),
       st.integers(min_value=0, max_value=len(build_table())), st.booleans())
def test_a_mutated_table_parses_or_raises_bad_binary(mutations, length, fix_checksums):
    blob = bytearray(build_table())
    for position, value in mutations:
        blob[position] = value
    if fix_checksums:  # get past the checksums to the structure behind them
        _fix_table_checksums(blob)
    try:
        discovery.parse(bytes(blob[:length]))
    except BadBinary:
        pass


def _fix_table_checksums(blob: bytearray) -> None:
    header = d.binary_header.from_buffer(blob)
    sizes = {d.IP_DISCOVERY: lambda at: d.ip_discovery_header.from_buffer(blob, at).size,
             d.GC: lambda at: d.gpu_info_header.from_buffer(blob, at).size,
             d.HARVEST_INFO: lambda at: d.harvest_table.SIZE}
    for table_id, size_of in sizes.items():
        info = header.table_list[table_id]
        if info.offset and info.offset + d.ip_discovery_header.SIZE <= len(blob):
            info.checksum = checksum(blob[info.offset:info.offset + size_of(info.offset)])
    if header.binary_size <= len(blob):
        _fix_binary_checksum(blob)
