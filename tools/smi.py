"""`python -m tools.smi [DEVICE] [--mock] [--json] [--watch SECONDS] [--count N]`: a read-only look at
an AMD GPU that another process may own: IP versions, firmware versions, VRAM reached through the
page tables, clocks, temperatures and power.

The device is opened with `hal.open_observer`: no ownership lock, no driver unbound, no config write.
Nothing here writes a GPU register or sends a mailbox message: the SMU mailbox, the MM_INDEX and RSMU
index/data windows belong to the owner, and a second writer would race it. What needs them (VRAM past
BAR0, SMN registers, the SMU's version) is reported as not available, with the reason, unless the
owner's boot layout recorded it. What is read:
- discovery: MP0 C2PMSG_33 (IFWI done), RCC_CONFIG_MEMSIZE, the IP discovery table at the top of VRAM
  through BAR0, parsed by drivers.am.discovery;
- PSP: the SOS sign of life (C2PMSG_81) and its version (C2PMSG_58, psp_v13_0.c reads it there);
- firmware files: the set drivers.am.firmware picks for the discovered versions, found on the search
  path, with their header versions and SHA-256 (what a bring-up would load, not what runs);
- VRAM: every enabled VM context of both hubs whose base register holds a valid root is walked
  read-only through BAR0 in the GFX11 format (drivers.vm.amd_gfx11): page-table bytes, VRAM mapped
  (union of the leaves' ranges) and system pages mapped. The driver's VMID 0 reaches VRAM through the
  system aperture, so rings and tables without entries are counted only through the boot layout;
- the boot layout the owner writes (drivers.am.boot, when this driver has it): SMU version and the
  metrics table (SmuMetricsExternal_t in the owner's driver table, as last transferred).

`--json` prints one object (with `--watch`, one per line per round). `--watch` repeats every N seconds
until Ctrl-C (or `--count` rounds). `--mock` builds the mock machine, brings its GPU up with the AM
driver in this process (the owner), then reads it as a second, read-only reader.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import json
import logging
import os as host_environment
import pathlib
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Iterator, Sequence

from autogen.amd import smu13_driver_if_v13_0_0 as smu_if
from autogen.linux import pci_regs

import hal
from drivers.am import discovery as am_discovery
from drivers.am import firmware as am_firmware
from drivers.am.device import IFWI_INIT_DONE, MEBIBYTE_SHIFT, REGISTER_BAR, VRAM_BAR
from drivers.am.memory import FB_UNIT_SHIFT
from drivers.am.regs import PRE_DISCOVERY_BLOCKS, REGISTER_BYTES, Registers
from drivers.am.smu import decode_metrics
from drivers.vm import amd_gfx11
from drivers.vm.pagetable import EntryKind
from hal.errors import BadBinary, FirmwareError, HalError
from hal.lock import PID_FIELD_WIDTH, lock_path
from hal.os import O_CLOEXEC, O_RDONLY, OS, host
from hal.pcidev import PCIDevice
from tools.reset_gpu import PCI_VENDOR_AMD

log = logging.getLogger(__name__)

# hubs and their VM context register prefixes (gfxhub_v3_0.c regGCVM_*, mmhub_v3_0.c regMMVM_*)
HUBS = (("GC", "regGCVM_CONTEXT"), ("MMHUB", "regMMVM_CONTEXT"))
VMID_COUNT = 16  # CONTEXT0 .. CONTEXT15 in both hubs (gfxhub_v3_0_gart_disable: i < 16)
SOS_ALIVE_REGISTER = "regMP0_SMN_C2PMSG_81"  # psp_v13_0.c psp_v13_0_is_sos_alive
SOS_VERSION_REGISTER = "regMP0_SMN_C2PMSG_58"  # psp_v13_0.c: the SOS reports its version there
IFWI_REGISTER = "regMP0_SMN_C2PMSG_33"  # amdgpu_discovery.c: bit 31 once the IFWI is done
MEMSIZE_REGISTER = "regRCC_DEV0_EPF0_RCC_CONFIG_MEMSIZE"
FB_OFFSET_REGISTER = "regMMMC_VM_FB_OFFSET"  # mmhub_v3_0.c mmhub_v3_0_get_mc_fb_offset
FB_BASE_REGISTER = "regMMMC_VM_FB_LOCATION_BASE"  # mmhub_v3_0.c mmhub_v3_0_get_fb_location
SMU_TABLE_SLOT = "smu.driver_table"  # drivers.am.boot SLOTS: the SMU driver table (metrics land there)
# firmware whose versions are listed: the IPs drivers.am.firmware.firmware_for takes
FIRMWARE_IPS = ("GC", "MP0", "MP1", "SDMA0")
MAX_TABLES_WALKED = 1 << 16  # a corrupt or changing table cannot make the walk run away
NO_LAYOUT = "no boot layout"
DEFAULT_DEVICE_ENV = "GPUHAL_DEVICE"
LARGEST_BAR = "max"  # hal.open bar_sizes: the largest size the bridge windows leave room for


class Unavailable(Exception):
    """A figure this reader cannot get without writing to the device; the message says why."""


def unavailable(reason: str) -> dict:
    return {"available": False, "reason": f"not available: {reason}"}


# -- the page-table walk ------------------------------------------------------------------------
@dataclass
class TableWalk:
    """What one page-table tree reaches: its tables (address -> bytes), VRAM leaves (VRAM offset,
    bytes), system bytes."""

    tables: dict[int, int] = field(default_factory=dict)
    vram_ranges: list[tuple[int, int]] = field(default_factory=list)
    system_bytes: int = 0
    unreadable_tables: int = 0
    truncated: bool = False


def walk_tree(read_table, root_address: int, vram_base_offset: int,
              format: amd_gfx11.Gfx11Format = amd_gfx11.GFX11) -> TableWalk:
    """Walk the tree whose root table is at VRAM physical address `root_address`, reading each table
    with `read_table(vram_offset, size) -> bytes | None` (None: out of reach). Reads only."""
    walk = TableWalk()
    pending = [(0, root_address)]
    while pending:
        level, address = pending.pop()
        if address in walk.tables:
            continue
        if len(walk.tables) >= MAX_TABLES_WALKED:
            walk.truncated = True
            break
        level_format = format.levels[level]
        walk.tables[address] = level_format.table_bytes
        data = read_table(address - vram_base_offset, level_format.table_bytes)
        if data is None:
            walk.unreadable_tables += 1
            continue
        invalid = format.invalid_entry(level)
        for raw in memoryview(data).cast("Q"):
            if raw == invalid or not raw:
                continue
            entry = format.decode(level, raw)
            if entry.kind is EntryKind.INVALID:
                continue
            if entry.kind is EntryKind.TABLE:
                if entry.system or level + 1 >= len(format.levels):
                    walk.unreadable_tables += 1  # tables in host memory are not read from here
                else:
                    pending.append((level + 1, entry.address))
                continue
            if entry.system:
                walk.system_bytes += level_format.page_size
            else:
                walk.vram_ranges.append((entry.address - vram_base_offset, level_format.page_size))
    return walk


def union_bytes(ranges: Sequence[tuple[int, int]]) -> int:
    """Bytes covered by (start, size) ranges, overlaps counted once."""
    total = 0
    end = None
    for start, size in sorted(ranges):
        if end is None or start > end:
            total += size
            end = start + size
        elif start + size > end:
            total += start + size - end
            end = start + size
    return total


# -- the reader ----------------------------------------------------------------------------------
class Observer:
    """Reads an AMD GPU through a `hal.open_observer` handle (see the module docstring)."""

    def __init__(self, pci: PCIDevice, *, firmware_roots: Sequence[pathlib.Path] | None = None,
                 lock_dir: str | None = None) -> None:
        self.pci = pci
        self.firmware_roots = firmware_roots
        self.lock_dir = lock_dir
        self.mmio = pci.bar(REGISTER_BAR)
        self.vram_bar = pci.bar(VRAM_BAR)
        self.registers = Registers(self.mmio, PRE_DISCOVERY_BLOCKS)
        self.discovery: am_discovery.Discovery | None = None
        self.vram_size = 0

    # -- reads that never write ----------------------------------------------------------------
    def read_register(self, block: str, name: str, instance: int = 0) -> int:
        """A register inside BAR5; one past it would need the owner's index/data window."""
        address = self.registers.address(block, name, instance)
        if address + REGISTER_BYTES > self.mmio.size:
            raise Unavailable(f"{block} {name} lies past BAR{REGISTER_BAR} ({address:#x}); reaching it "
                              "needs the MM_INDEX window, which belongs to the owner")
        return self.registers.reg(block, name, instance).read()

    def read_vram(self, offset: int, size: int) -> bytes:
        if offset < 0 or offset + size > self.vram_bar.size:
            raise Unavailable(f"VRAM {offset:#x}+{size:#x} lies past BAR{VRAM_BAR} "
                              f"({self.vram_bar.size:#x} bytes); the MM_INDEX window belongs to the owner")
        return self.vram_bar.read(offset, size)

    def _read_table(self, offset: int, size: int) -> bytes | None:
        try:
            return self.read_vram(offset, size)
        except Unavailable:
            return None

    # -- sections ------------------------------------------------------------------------------
    def discover(self) -> am_discovery.Discovery:
        ifwi = self.read_register("MP0", IFWI_REGISTER)
        if not ifwi & IFWI_INIT_DONE:
            raise Unavailable(f"the IFWI has not finished initialising the GPU (C2PMSG_33 {ifwi:#010x})")
        memsize = self.read_register("NBIO", MEMSIZE_REGISTER)
        self.vram_size = memsize << MEBIBYTE_SHIFT
        if self.vram_size < am_discovery.DISCOVERY_TMR_OFFSET:
            raise Unavailable(f"RCC_CONFIG_MEMSIZE reads {memsize} MiB: no discovery table in VRAM")
        offset = self.vram_size - am_discovery.DISCOVERY_TMR_OFFSET
        blob = self.read_vram(offset, am_discovery.DISCOVERY_TMR_SIZE)
        self.discovery = am_discovery.parse(blob)
        self.registers = Registers(self.mmio, self.discovery.blocks())
        return self.discovery

    def owner(self) -> dict | None:
        """The pid the ownership lock file names (read without locking; blank once released)."""
        seam = self.pci.os
        path = lock_path(self.lock_dir or seam.default_lock_dir(), self.pci.bdf)
        try:
            fd = seam.open(path, O_RDONLY | O_CLOEXEC)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return None
            return {"pid": None, "lock": path, "error": str(exc)}
        try:
            text = seam.pread(fd, PID_FIELD_WIDTH, 0).decode(errors="replace").strip()
        finally:
            seam.close(fd)
        if not text.isdigit():
            return None
        return {"pid": int(text), "lock": path}

    def ips(self) -> list[dict]:
        return [{"name": ip.block or ip.hw_name, "hw_name": ip.hw_name, "instance": ip.instance,
                 "version": ip.version_text} for ip in self.discovery.ips()]

    def psp(self) -> dict:
        alive = self.read_register("MP0", SOS_ALIVE_REGISTER) != 0
        status = {"available": True, "sos_alive": alive}
        if alive:
            status["sos_version"] = f"{self.read_register('MP0', SOS_VERSION_REGISTER):#010x}"
        return status

    def firmware_files(self) -> list[dict]:
        versions = {name: self.discovery.version(name) for name in FIRMWARE_IPS
                    if _has_block(self.discovery, name)}
        try:
            revision = self.pci.cfg_read8(pci_regs.PCI_REVISION_ID)
            specs = am_firmware.firmware_for(versions, pci_device=self.pci.device_id,
                                             pci_revision=revision)
        except FirmwareError as exc:
            return [{"name": None, "error": str(exc)}]
        files = []
        for spec in specs:
            try:
                image = am_firmware.load(spec, self.firmware_roots)
            except (FirmwareError, OSError) as exc:
                files.append({"name": spec.name, "found": False, "error": str(exc)})
                continue
            if image is None:
                files.append({"name": spec.name, "found": False, "required": False})
                continue
            files.append({"name": image.name, "found": True, "kind": spec.kind, "path": image.path,
                          "ucode_version": f"{image.ucode_version:#010x}",
                          "header_version": "%d.%d" % image.header_version, "sha256": image.sha256})
        return files

    def vram(self) -> dict:
        fb_offset = self.read_register("MMHUB", FB_OFFSET_REGISTER)
        field_value = self.registers.reg("MMHUB", FB_OFFSET_REGISTER).decode(fb_offset)["FB_OFFSET"]
        vram_base_offset = field_value << FB_UNIT_SHIFT
        contexts = []
        walks: dict[int, TableWalk] = {}
        for hub, prefix in HUBS:
            for vmid in range(VMID_COUNT):
                context = self._context(hub, prefix, vmid, vram_base_offset, walks)
                if context is not None:
                    contexts.append(context)
        tables = {address: size for walk in walks.values() for address, size in walk.tables.items()}
        table_bytes = sum(tables.values())
        vram_ranges = [item for walk in walks.values() for item in walk.vram_ranges]
        mapped_vram = union_bytes(vram_ranges)
        return {"available": True, "size_bytes": self.vram_size, "bar0_bytes": self.vram_bar.size,
                "used_bytes": table_bytes + mapped_vram, "page_table_bytes": table_bytes,
                "mapped_vram_bytes": mapped_vram,
                "mapped_system_bytes": sum(walk.system_bytes for walk in walks.values()),
                "source": "page tables", "contexts": contexts}

    def _context(self, hub: str, prefix: str, vmid: int, vram_base_offset: int,
                 walks: dict[int, TableWalk]) -> dict | None:
        cntl_name = f"{prefix}{vmid}_CNTL"
        cntl = self.registers.reg(hub, cntl_name)
        fields = cntl.decode(self.read_register(hub, cntl_name))
        if not fields["ENABLE_CONTEXT"]:
            return None
        low = self.read_register(hub, f"{prefix}{vmid}_PAGE_TABLE_BASE_ADDR_LO32")
        high = self.read_register(hub, f"{prefix}{vmid}_PAGE_TABLE_BASE_ADDR_HI32")
        root = amd_gfx11.GFX11.decode(0, (high << 32) | low)
        if root.kind is not EntryKind.TABLE:
            return None
        context = {"hub": hub, "vmid": vmid, "root": f"{root.address:#x}",
                   "depth": fields["PAGE_TABLE_DEPTH"]}
        if fields["PAGE_TABLE_DEPTH"] != amd_gfx11.PAGE_TABLE_DEPTH or root.system:
            context["walked"] = False
            return context
        walk = walks.get(root.address)
        if walk is None:
            walk = walk_tree(self._read_table, root.address, vram_base_offset)
            walks[root.address] = walk
        context.update(walked=True, tables=len(walk.tables), unreadable_tables=walk.unreadable_tables,
                       truncated=walk.truncated, mapped_vram_bytes=union_bytes(walk.vram_ranges),
                       mapped_system_bytes=walk.system_bytes)
        return context

    def boot_layout(self):
        """The owner's boot layout (drivers.am.boot.Layout), or None when the flags name none.
        Unavailable when this driver has no layout reader or the layout is out of reach."""
        try:
            from drivers.am import boot as am_boot
        except ImportError:
            raise Unavailable("this driver has no boot layout (drivers.am.boot)") from None
        find = getattr(am_boot, "find", None)
        if find is None:
            raise Unavailable("drivers.am.boot has no read-only reader (find)")
        for name in am_boot.FLAG_REGISTERS:
            self.read_register("GC", name)  # Unavailable when past BAR5
        return find(self.registers, self)  # VRAM through `read`: BAR0 only

    def read(self, offset: int, size: int) -> bytes:
        """VRAM bytes through BAR0 (the `vram` reader drivers.am.boot.find takes)."""
        return self.read_vram(offset, size)

    def fb_base(self) -> int:
        """The MC address of VRAM offset 0 (MMHUB FB_LOCATION_BASE, as drivers.am.memory reads it)."""
        value = self.read_register("MMHUB", FB_BASE_REGISTER)
        return self.registers.reg("MMHUB", FB_BASE_REGISTER).decode(value)["FB_BASE"] << FB_UNIT_SHIFT

    def metrics(self, layout) -> dict:
        slot = layout.slots.get(SMU_TABLE_SLOT) if layout is not None else None
        if slot is None:
            return unavailable(NO_LAYOUT if layout is None else "the boot layout records no SMU table")
        address, _ = slot
        data = self.read_vram(address - self.fb_base(), smu_if.SmuMetricsExternal_t.SIZE)
        return {"available": True, "source": "the owner's SMU driver table, as last transferred",
                **decode_metrics(data)}

    @staticmethod
    def layout_summary(layout) -> dict:
        """Each structure's address under what it is: "mc_address" (the GPU's view of VRAM) or
        "vram_address" (physical, as the VMID 0 root: drivers.am.boot.slot_address_kind)."""
        from drivers.am import boot as am_boot  # found: boot_layout imported it

        return {"available": True, "generation": layout.generation, "state": layout.state.name,
                "owner_pid": layout.owner_pid, "blocks": list(layout.blocks),
                "structures": {name: {am_boot.slot_address_kind(name): f"{address:#x}", "size": size}
                               for name, (address, size) in layout.slots.items()},
                "firmware_files": len(layout.firmware), "allocations": len(layout.allocations)}

    # -- everything ------------------------------------------------------------------------------
    def status(self) -> dict:
        pci = self.pci
        result: dict = {"device": pci.device_string,
                        "vendor_id": f"{pci.vendor_id:#06x}", "device_id": f"{pci.device_id:#06x}",
                        "driver": pci.sysfs.driver(pci.bdf), "owner": self.owner()}
        try:
            self.discover()
        except Unavailable as exc:
            reason = str(exc)
            for name in ("ips", "boot_layout", "firmware", "vram", "metrics"):
                result[name] = unavailable(reason)
            return result
        result["ips"] = self.ips()
        layout = None
        try:
            layout = self.boot_layout()
        except Unavailable as exc:
            result["boot_layout"] = unavailable(str(exc))
        except BadBinary as exc:
            result["boot_layout"] = unavailable(f"the flags name a corrupt layout: {exc}")
        else:
            result["boot_layout"] = self.layout_summary(layout) if layout else unavailable(NO_LAYOUT)
        files = self.firmware_files()
        if layout is not None:
            for item in files:
                if item.get("found"):
                    item["loaded_by_owner"] = layout.firmware.get(item["name"]) == item["sha256"]
        result["firmware"] = {"psp": _section(self.psp), "smu": self._smu_version(layout, files),
                              "files": files}
        result["vram"] = _section(self.vram)
        if layout is not None and result["vram"].get("available"):
            result["vram"]["allocated_bytes"] = sum(item.size for item in layout.allocations)
            result["vram"]["allocations"] = len(layout.allocations)
        result["metrics"] = _section(lambda: self.metrics(layout))
        return result

    @staticmethod
    def _smu_version(layout, files: list[dict]) -> dict:
        """The PMFW version: the header of the SMC file the owner's PSP loaded (matched by SHA-256
        against the layout's record); the SMU itself answers it only through the owner's mailbox."""
        if layout is None:
            return unavailable(f"{NO_LAYOUT} (the SMU answers its version only through the owner's "
                               "mailbox)")
        for item in files:
            if item.get("kind") == am_firmware.KIND_SMC and item.get("loaded_by_owner"):
                return {"available": True, "version": item["ucode_version"],
                        "source": f"{item['name']}, loaded by the owner (SHA-256 in the boot layout)"}
        return unavailable("the boot layout records no SMC file found on this host's firmware path")


def _has_block(found: am_discovery.Discovery, name: str) -> bool:
    try:
        found.find(name)
    except LookupError:
        return False
    return True


def _section(read) -> dict:
    try:
        return read()
    except Unavailable as exc:
        return unavailable(str(exc))


# -- output ---------------------------------------------------------------------------------------
def _reason(section: dict) -> str | None:
    return None if section.get("available", True) else section["reason"]


def as_text(status: dict) -> str:
    owner = status.get("owner")
    owner_text = f"owner pid {owner['pid']}" if owner and owner.get("pid") else "no owner"
    lines = [f"{status['device']}  {status['vendor_id']}:{status['device_id']}  {owner_text}  "
             f"driver {status.get('driver') or 'none'}"]
    ips = status["ips"]
    if isinstance(ips, dict):
        lines.append(f"  IPs: {ips['reason']}")
        return "\n".join(lines)
    lines.append("  IPs: " + ", ".join(f"{ip['name']}{'' if not ip['instance'] else ip['instance']} "
                                       f"{ip['version']}" for ip in ips))
    layout = status["boot_layout"]
    if _reason(layout):
        lines.append(f"  boot layout: {layout['reason']}")
    else:
        lines.append(f"  boot layout: generation {layout['generation']}, {layout['state']}, owner pid "
                     f"{layout['owner_pid']}, blocks {' '.join(layout['blocks'])}")
    firmware = status["firmware"]
    psp = firmware["psp"]
    if _reason(psp):
        lines.append(f"  PSP: {psp['reason']}")
    else:
        running = f"running, version {psp['sos_version']}" if psp["sos_alive"] else "not running"
        lines.append(f"  PSP: SOS {running}")
    smu = firmware["smu"]
    lines.append(f"  SMU: {smu['reason'] if _reason(smu) else 'version ' + smu['version']}")
    for item in firmware["files"]:
        if item.get("found"):
            loaded = {True: ", loaded by the owner", False: ", not the owner's"}.get(
                item.get("loaded_by_owner"), "")
            lines.append(f"    {item['name']}: ucode {item['ucode_version']}, sha256 "
                         f"{item['sha256'][:16]}{loaded}")
        else:
            lines.append(f"    {item['name']}: {item.get('error') or 'absent (optional)'}")
    vram = status["vram"]
    if _reason(vram):
        lines.append(f"  VRAM: {vram['reason']}")
    else:
        lines.append(f"  VRAM: {vram['size_bytes'] >> 20} MiB, {vram['used_bytes'] >> 10} KiB through "
                     f"page tables ({vram['page_table_bytes'] >> 10} KiB tables, "
                     f"{vram['mapped_vram_bytes'] >> 10} KiB mapped), "
                     f"{vram['mapped_system_bytes'] >> 10} KiB system pages mapped")
        if "allocated_bytes" in vram:
            lines.append(f"        {vram['allocated_bytes'] >> 10} KiB in {vram['allocations']} allocations "
                         "(boot layout)")
    metrics = status["metrics"]
    if _reason(metrics):
        lines.append(f"  metrics: {metrics['reason']}")
    else:
        clocks = ", ".join(f"{name} {mhz} MHz" for name, mhz in metrics["clocks_mhz"].items())
        lines.append(f"  metrics: edge {metrics['temperature_edge_c']} C, hotspot "
                     f"{metrics['temperature_hotspot_c']} C, {metrics['power_socket_w']} W, {clocks}")
    return "\n".join(lines)


# -- the mock owner -------------------------------------------------------------------------------
@contextlib.contextmanager
def mock_owner() -> Iterator["MockOwner"]:
    """The default mock machine with its GPU brought up by the AM driver in this process (the owner,
    holding the lock until the block ends)."""
    from drivers.am.device import AMConfig, AMDevice
    from mockgpu import GPU_BDF, Machine
    from mockgpu.amd.firmware_images import write_navi31_set

    with tempfile.TemporaryDirectory(prefix="gpuhal-smi-") as scratch:
        lock_dir = str(pathlib.Path(scratch) / "lock")
        pathlib.Path(lock_dir).mkdir()
        root = write_navi31_set(pathlib.Path(scratch) / "firmware")
        machine = Machine.default(lock_dir=lock_dir)
        device = f"pci:{GPU_BDF}"
        # the owner resizes BAR0 over all of VRAM (a ReBAR system), so a second reader reaches the
        # discovery table and the page tables without the owner's MM_INDEX window
        pci = hal.open(device, os=machine.os, unbind=True, bar_sizes={VRAM_BAR: LARGEST_BAR})
        try:
            owner = AMDevice(pci, config=AMConfig(firmware_dir=str(root)))
            try:
                yield MockOwner(machine.os, device, [pathlib.Path(root)], lock_dir, owner)
            finally:
                owner.fini()
        finally:
            pci.close()


@dataclass
class MockOwner:
    """The mock machine's seam and GPU, and the AM driver that owns it (`tick` plays its part)."""

    seam: OS
    device: str
    firmware_roots: list[pathlib.Path]
    lock_dir: str
    driver: object

    def tick(self) -> None:
        """What a running owner does between two looks: the SMU's metrics into its driver table."""
        try:
            smu = self.driver.block("SMU")
        except LookupError:
            return
        smu.metrics()


def _default_device(seam: OS) -> str:
    named = host_environment.environ.get(DEFAULT_DEVICE_ENV)
    if named:
        return named
    for info in hal.list_devices(seam):
        if info.vendor_id == PCI_VENDOR_AMD:
            return f"pci:{info.bdf}"
    raise hal.DeviceNotFound("no AMD display device found; name one (pci:0000:03:00.0)")


def read_status(seam: OS, device: str, *, firmware_roots: Sequence[pathlib.Path] | None = None,
                lock_dir: str | None = None) -> dict:
    """One round: open an observer, read everything, close it."""
    with hal.open_observer(device, os=seam) as pci:
        return Observer(pci, firmware_roots=firmware_roots, lock_dir=lock_dir).status()


def _rounds(watch: float | None, count: int | None) -> Iterator[int]:
    round_number = 0
    while True:
        yield round_number
        round_number += 1
        if watch is None or (count is not None and round_number >= count):
            return
        time.sleep(watch)


def _report(seam: OS, device: str | None, args, roots=None, lock_dir=None, before_round=None) -> int:
    device = device or _default_device(seam)
    for _ in _rounds(args.watch, args.count):
        if before_round is not None:
            before_round()
        try:
            status = read_status(seam, device, firmware_roots=roots, lock_dir=lock_dir)
        except HalError as exc:
            status = {"device": device, "error": f"{type(exc).__name__}: {exc}"}
        if args.json:
            print(json.dumps(status, indent=None if args.watch else 2), flush=True)
        elif "error" in status:
            print(f"{device}: {status['error']}", flush=True)
        else:
            print(as_text(status), flush=True)
        if "error" in status and args.watch is None:
            return 1
    return 0


def main(argv: list[str] | None = None, seam: OS | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.smi", description=__doc__.splitlines()[0])
    parser.add_argument("device", nargs="?", help=f"device string (default ${DEFAULT_DEVICE_ENV} or the "
                                                  "first AMD display device)")
    mock_default = host_environment.environ.get("GPUHAL_MOCK") == "1"
    parser.add_argument("--mock", action="store_true", default=mock_default,
                        help="read the mock machine's GPU, brought up by the AM driver first "
                             "(also GPUHAL_MOCK=1)")
    parser.add_argument("--json", action="store_true", help="one JSON object (one line per round with "
                                                             "--watch)")
    parser.add_argument("--watch", type=float, metavar="SECONDS",
                        help="read again every SECONDS until Ctrl-C")
    parser.add_argument("--count", type=int, metavar="N", help="with --watch: stop after N rounds")
    args = parser.parse_args(argv)
    if args.watch is not None and args.watch <= 0:
        parser.error("--watch takes a positive number of seconds")
    if args.count is not None and args.count <= 0:
        parser.error("--count takes a positive number of rounds")
    try:
        if args.mock:
            with mock_owner() as owner:
                return _report(owner.seam, args.device or owner.device, args, owner.firmware_roots,
                               owner.lock_dir, owner.tick)
        return _report(seam or host(), args.device, args)
    except KeyboardInterrupt:
        return 0
    except HalError as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
