"""The simulated kernel's file tree: sysfs PCI attributes, /dev/vfio, /proc/self/pagemap.

The tree is built on demand from the machine's current state, so it always matches the hardware
and kernel models (a `driver` link exists only while bound, /dev/vfio/<group> only while a device
of the group is bound to vfio-pci, a no-IOMMU group only while its device is). Attribute formats
and permissions are those of drivers/pci/pci-sysfs.c, drivers/pci/pci-driver.c,
drivers/iommu/iommu.c and fs/proc/task_mmu.c.
"""
from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from autogen.linux import pci_regs

from hal.os import PAGE_SIZE
from hal.region import CallbackRegion, MemoryRegion, Region
from mockgpu.bits import field_get
from mockgpu.files import MockFile
from mockgpu.kernel import parse_unsigned
from mockgpu.pci import REBAR_UNIT, BarKind, Bridge, PCIFunction
from mockgpu.vfio import ContainerFile, config_read_bytes, config_write_bytes

if TYPE_CHECKING:
    from mockgpu.kernel import PCIKernel
    from mockgpu.machine import Machine

# drivers/vfio/group.c vfio_noiommu_group_alloc: iommu_group_set_name(..., "vfio-noiommu")
NOIOMMU_GROUP_NAME = "vfio-noiommu"
# drivers/pci/pci-sysfs.c: unprivileged readers see only the first 64 bytes of config space
UNPRIVILEGED_CONFIG_BYTES = 64
# include/linux/pci.h with CONFIG_PCI_IOV: 6 BARs + ROM + 6 SR-IOV BARs (+ 4 bridge windows)
ENDPOINT_RESOURCE_LINES = 13
BRIDGE_RESOURCE_LINES = 17
ROM_RESOURCE = 6
# include/linux/ioport.h: resource flags the `resource` file prints
IORESOURCE_IO = 0x00000100
IORESOURCE_MEM = 0x00000200
IORESOURCE_PREFETCH = 0x00002000
IORESOURCE_SIZEALIGN = 0x00040000
IORESOURCE_MEM_64 = 0x00100000
# drivers/pci/probe.c pci_speed_string(): LNKSTA speed codes as sysfs prints them
LINK_SPEED_NAMES = {
    pci_regs.PCI_EXP_LNKSTA_CLS_2_5GB: "2.5 GT/s PCIe",
    pci_regs.PCI_EXP_LNKSTA_CLS_5_0GB: "5.0 GT/s PCIe",
    pci_regs.PCI_EXP_LNKSTA_CLS_8_0GB: "8.0 GT/s PCIe",
    pci_regs.PCI_EXP_LNKSTA_CLS_16_0GB: "16.0 GT/s PCIe",
    pci_regs.PCI_EXP_LNKSTA_CLS_32_0GB: "32.0 GT/s PCIe",
    pci_regs.PCI_EXP_LNKSTA_CLS_64_0GB: "64.0 GT/s PCIe",
}
# fs/proc/task_mmu.c: pagemap entry bits
PAGEMAP_ENTRY_SIZE = 8
PAGEMAP_PRESENT = 1 << 63
PAGEMAP_EXCLUSIVE = 1 << 56
PAGEMAP_PFN_MASK = (1 << 55) - 1
VFIO_DEV_DIR = "/dev/vfio"


@dataclass
class Node:
    mode: int


@dataclass
class Dir(Node):
    entries: Callable[[], dict[str, Node]]


@dataclass
class Link(Node):
    target: str


@dataclass
class Attr(Node):
    """A text attribute: `show()` gives the content, `store(text)` handles a write."""

    show: Callable[[], str] | None = None
    store: Callable[[str], None] | None = None


@dataclass
class Special(Node):
    """A file whose open() builds its own MockFile (binary attributes, device nodes)."""

    opener: Callable[[str, int], MockFile]


class AttrFile(MockFile):
    def __init__(self, path: str, attr: Attr) -> None:
        super().__init__(path)
        self.attr = attr
        self._content: bytes | None = None

    def pread(self, n: int, offset: int) -> bytes:
        if self.attr.show is None:
            raise OSError(errno.EIO, f"{self.path} is write-only")
        if offset == 0 or self._content is None:
            self._content = self.attr.show().encode()
        return self._content[offset:offset + n]

    def pwrite(self, data: bytes, offset: int) -> int:
        if self.attr.store is None:
            raise OSError(errno.EIO, f"{self.path} is read-only")
        self.attr.store(bytes(data).decode(errors="replace"))
        return len(data)


class ConfigFile(MockFile):
    """The `config` attribute: any offset and length, split into aligned config transactions."""

    def __init__(self, path: str, machine: "Machine", function: PCIFunction) -> None:
        super().__init__(path)
        self.machine = machine
        self.function = function

    def _limit(self) -> int:
        return self.function.cfg.size if self.machine.root else UNPRIVILEGED_CONFIG_BYTES

    def pread(self, n: int, offset: int) -> bytes:
        end = min(offset + n, self._limit())
        if offset >= end:
            return b""
        return config_read_bytes(self.function, offset, end - offset)

    def pwrite(self, data: bytes, offset: int) -> int:
        end = min(offset + len(data), self.function.cfg.size)
        if offset >= end:
            return 0
        config_write_bytes(self.function, offset, bytes(data[:end - offset]))
        return end - offset


class RevokedMapping(ValueError):
    """Access to a resource mapping whose file the kernel removed (a real process gets SIGBUS)."""


class RevocableRegion(CallbackRegion):
    """A callback-backed resource mapping that stops answering once the kernel revokes it."""

    def __init__(self, inner: Region, path: str) -> None:
        super().__init__(inner.size, self._read, self._write)
        self.inner = inner
        self.path = path
        self.revoked = False

    def revoke(self) -> None:
        self.revoked = True

    def _alive(self) -> None:
        if self.revoked:
            raise RevokedMapping(f"{self.path} was removed (BAR resized or device removed); map it again")

    def _read(self, off: int, n: int) -> bytes:
        self._alive()
        return self.inner.read(off, n)

    def _write(self, off: int, data: bytes) -> None:
        self._alive()
        self.inner.write(off, data)


class ResourceFile(MockFile):
    """`resourceN`: mmap for memory BARs; read/write of 1, 2 or 4 bytes at any offset for I/O BARs
    (drivers/pci/pci-sysfs.c pci_resource_io, with sysfs clamping each access to the file size)."""

    def __init__(self, path: str, kernel: "PCIKernel", function: PCIFunction, index: int) -> None:
        super().__init__(path)
        self.kernel = kernel
        self.function = function
        self.index = index
        self.spec = function.bars[index]

    def _io_length(self, offset: int, n: int, writing: bool) -> int:
        """How many bytes an I/O access moves: fs/sysfs/file.c sysfs_kf_bin_read/_write clamp it
        to the attribute's size (pci_resource_len); past the end a read gets 0 bytes and a write
        EFBIG; pci_resource_io then takes 1, 2 or 4 bytes, aligned or not (inb/inw/inl)."""
        if self.spec.kind is not BarKind.IO:
            raise OSError(errno.EINVAL, f"{self.path}: memory BARs are accessed through mmap")
        size = self.function.assigned_sizes.get(self.index, 0)
        if offset >= size:
            if writing:
                raise OSError(errno.EFBIG, f"{self.path}: write at {offset:#x} is past the {size:#x} ports")
            return 0
        length = min(n, size - offset)
        if length not in (1, 2, 4):
            raise OSError(errno.EINVAL, f"{self.path}: I/O access of {length} bytes at {offset:#x}")
        return length

    def pread(self, n: int, offset: int) -> bytes:
        if n == 0:
            return b""
        length = self._io_length(offset, n, writing=False)
        if length == 0:
            return b""
        return self.function.mmio_read(self.index, offset, length)

    def pwrite(self, data: bytes, offset: int) -> int:
        if not data:
            return 0
        length = self._io_length(offset, len(data), writing=True)
        self.function.mmio_write(self.index, offset, bytes(data[:length]))
        return length

    def mmap(self, size: int, offset: int, writable: bool) -> Region:
        if self.spec.kind is BarKind.IO:
            raise OSError(errno.EINVAL, f"{self.path}: I/O BARs cannot be mapped")
        # pci_mmap_resource checks against the kernel's resource, not what the BAR decodes now
        resource_size = self.function.assigned_sizes.get(self.index, self.function.bar_sizes[self.index])
        limit = -(-resource_size // PAGE_SIZE) * PAGE_SIZE
        if offset % PAGE_SIZE or size <= 0 or offset + size > limit:
            raise OSError(errno.EINVAL, f"{self.path}: mmap [{offset:#x}, +{size:#x}) does not fit "
                                        f"BAR of {resource_size:#x}")
        region = self.function.bar_region(self.index, resource_size)
        if offset != 0 or size != region.size:
            region = region.sub(offset, min(size, region.size - offset))
        # removing the resource files (resize, remove) revokes the mapping
        if isinstance(region, MemoryRegion):
            self.kernel.track_mapping(self.function, region.release)
            return region
        revocable = RevocableRegion(region, self.path)
        self.kernel.track_mapping(self.function, revocable.revoke)
        return revocable


class PagemapFile(MockFile):
    """/proc/self/pagemap: 8 bytes per virtual page, PFN visible only to root."""

    def __init__(self, path: str, machine: "Machine") -> None:
        super().__init__(path)
        self.machine = machine

    def pread(self, n: int, offset: int) -> bytes:
        if offset % PAGEMAP_ENTRY_SIZE or n % PAGEMAP_ENTRY_SIZE:
            raise OSError(errno.EINVAL, "pagemap reads are whole 8-byte entries")
        out = bytearray()
        first_page = offset // PAGEMAP_ENTRY_SIZE
        for page in range(first_page, first_page + n // PAGEMAP_ENTRY_SIZE):
            pfn = self.machine.ram.pfn_of_vaddr(page * PAGE_SIZE)
            entry = 0
            if pfn is not None:
                entry = PAGEMAP_PRESENT | PAGEMAP_EXCLUSIVE
                if self.machine.root:
                    entry |= pfn & PAGEMAP_PFN_MASK
                    self.machine.ram.revealed.add(pfn)
            out += entry.to_bytes(PAGEMAP_ENTRY_SIZE, "little")
        return bytes(out)

    def pwrite(self, data: bytes, offset: int) -> int:
        raise OSError(errno.EBADF, "pagemap is read-only")


def _ro(show: Callable[[], str]) -> Attr:
    return Attr(0o444, show=show)


def _wo(store: Callable[[str], None]) -> Attr:
    return Attr(0o200, store=store)


def _rw(show: Callable[[], str], store: Callable[[str], None]) -> Attr:
    return Attr(0o644, show=show, store=store)


class SysfsTree:
    """Builds the simulated file tree for one Machine."""

    def __init__(self, machine: "Machine") -> None:
        self.machine = machine

    # -- paths ---------------------------------------------------------------------------------
    def device_path(self, function: PCIFunction) -> str:
        """/sys/devices/pci0000:00/<upstream bdfs...>/<bdf>"""
        chain = [bridge.bdf for bridge in reversed(function.upstream_path())]
        return "/".join(["/sys/devices/pci0000:00", *chain, function.bdf])

    def _relative(self, from_dir: str, target: str) -> str:
        depth = len([part for part in from_dir.split("/") if part]) - 1
        return "../" * depth + target.lstrip("/").removeprefix("sys/")

    # -- root ----------------------------------------------------------------------------------
    def root(self) -> Dir:
        return Dir(0o555, lambda: {
            "sys": Dir(0o555, lambda: {
                "bus": Dir(0o555, lambda: {"pci": self._bus_pci()}),
                "devices": Dir(0o555, lambda: {"pci0000:00": self._host_bridge()}),
                "kernel": Dir(0o555, self._kernel_dir),
                "module": Dir(0o555, self._modules),
            }),
            "dev": Dir(0o555, lambda: {"vfio": Dir(0o555, self._dev_vfio), **self._extra("dev")}),
            "proc": Dir(0o555, lambda: {"self": Dir(0o555, lambda: {
                "pagemap": Special(0o444, lambda path, flags: PagemapFile(path, self.machine)),
            }), **self._extra("proc")}),
        })

    def _extra(self, top: str) -> dict[str, Node]:
        """Nodes that kernel models outside the PCI core add (`Machine.extra_files`: absolute path ->
        Node, e.g. a character device's /dev node or a driver's /proc file), below /`top`."""
        tree: dict = {}
        for path, node in self.machine.extra_files.items():
            parts = [part for part in path.split("/") if part]
            if len(parts) < 2 or parts[0] != top:
                continue
            folder = tree
            for name in parts[1:-1]:
                folder = folder.setdefault(name, {})
            folder[parts[-1]] = node
        return {name: self._as_node(entry) for name, entry in tree.items()}

    def _as_node(self, entry) -> Node:
        if isinstance(entry, dict):
            return Dir(0o555, lambda: {name: self._as_node(child) for name, child in entry.items()})
        return entry

    def _bus_pci(self) -> Dir:
        machine = self.machine
        return Dir(0o555, lambda: {
            "devices": Dir(0o555, lambda: {
                bdf: Link(0o777, "../../../" + self.device_path(function).removeprefix("/sys/"))
                for bdf, function in sorted(machine.functions.items())
            }),
            "drivers": Dir(0o555, lambda: {name: self._driver_dir(name) for name in machine.kernel.drivers}),
            "drivers_probe": _wo(lambda text: machine.kernel.probe(text.strip(), strict=True)),
            "rescan": _wo(lambda text: machine.rescan() if text.strip() == "1" else None),
        })

    def _driver_dir(self, name: str) -> Dir:
        kernel = self.machine.kernel

        def entries() -> dict[str, Node]:
            found: dict[str, Node] = {
                "bind": _wo(lambda text: kernel.bind(text.strip(), name)),
                "unbind": _wo(lambda text: kernel.unbind(text.strip(), name)),
                "new_id": _wo(lambda text: kernel.new_id(name, text)),
            }
            for bdf, bound in sorted(kernel.bound.items()):
                if bound == name and bdf in self.machine.functions:
                    target = self.device_path(self.machine.functions[bdf]).removeprefix("/sys/")
                    found[bdf] = Link(0o777, "../../../../" + target)
            return found
        return Dir(0o555, entries)

    def _host_bridge(self) -> Dir:
        return Dir(0o555, lambda: {
            function.bdf: self._device_dir(function)
            for function in self.machine.functions.values() if function.parent is None
        })

    def _kernel_dir(self) -> dict[str, Node]:
        """/sys/kernel/iommu_groups: the IOMMU driver's groups, and in no-IOMMU mode the fake group
        vfio makes for each device while vfio-pci has it (drivers/vfio/group.c
        vfio_noiommu_group_alloc: named "vfio-noiommu", with no default domain, so its `type` reads
        "unknown" as drivers/iommu/iommu.c iommu_group_show_type says)."""
        kernel = self.machine.kernel
        groups: dict[str, Node] = {}
        domain_type = "identity\n" if self.machine.iommu_passthrough else "DMA\n"
        for group, members in sorted(kernel.groups.items()):

            def devices(members=members) -> dict[str, Node]:
                return {bdf: Link(0o777, "../../../../" + self._sys_relative(bdf))
                        for bdf in members if bdf in self.machine.functions}
            entries: dict[str, Node] = {"devices": Dir(0o555, devices)}
            if group in kernel.noiommu_groups:
                entries["name"] = _ro(lambda: f"{NOIOMMU_GROUP_NAME}\n")
                entries["type"] = _ro(lambda: "unknown\n")
            else:
                entries["type"] = _ro(lambda: domain_type)
            groups[str(group)] = Dir(0o555, lambda entries=entries: entries)
        return {"iommu_groups": Dir(0o555, lambda: groups)}

    def _modules(self) -> dict[str, Node]:
        machine = self.machine

        def store_noiommu(text: str) -> None:
            machine.noiommu = text.strip() in ("Y", "y", "1")
        return {
            "vfio": Dir(0o555, lambda: {"parameters": Dir(0o555, lambda: {
                "enable_unsafe_noiommu_mode": _rw(lambda: "Y\n" if machine.noiommu else "N\n", store_noiommu),
            })}),
            "vfio_pci": Dir(0o555, lambda: {}),
            "vfio_iommu_type1": Dir(0o555, lambda: {}) if machine.iommu else Dir(0o555, lambda: {}),
        }

    def _dev_vfio(self) -> dict[str, Node]:
        machine = self.machine
        entries: dict[str, Node] = {}
        if machine.iommu or machine.noiommu:
            entries["vfio"] = Special(0o666, lambda path, flags: ContainerFile(machine, path))
        if not (machine.iommu or machine.noiommu):
            return entries
        for group in machine.kernel.groups:
            if machine.kernel.group_has_vfio(group):
                # drivers/vfio/group.c vfio_create_group names the node of a VFIO_NO_IOMMU group
                # "noiommu-<id>"
                noiommu = group in machine.kernel.noiommu_groups
                name = f"noiommu-{group}" if noiommu else str(group)
                entries[name] = Special(0o600, self._group_opener(group))
        return entries

    # -- one device ------------------------------------------------------------------------------
    def _device_dir(self, function: PCIFunction) -> Dir:
        return Dir(0o555, lambda: self._device_entries(function))

    def _device_entries(self, function: PCIFunction) -> dict[str, Node]:
        machine = self.machine
        kernel = machine.kernel
        ident = function.identity
        bdf = function.bdf
        here = self.device_path(function)
        entries: dict[str, Node] = {
            "vendor": _ro(lambda: f"0x{ident.vendor:04x}\n"),
            "device": _ro(lambda: f"0x{ident.device:04x}\n"),
            "subsystem_vendor": _ro(lambda: f"0x{ident.subsystem_vendor:04x}\n"),
            "subsystem_device": _ro(lambda: f"0x{ident.subsystem_device:04x}\n"),
            "class": _ro(lambda: f"0x{ident.class_code:06x}\n"),
            "revision": _ro(lambda: f"0x{ident.revision:02x}\n"),
            "config": Special(0o644, lambda path, flags: ConfigFile(path, machine, function)),
            "resource": _ro(lambda: self._resource_table(function)),
            "driver_override": _rw(lambda: f"{kernel.overrides.get(bdf) or '(null)'}\n",
                                   lambda text: kernel.set_override(bdf, text)),
            "remove": _wo(lambda text: machine.remove(bdf) if text.strip() == "1" else None),
            "rescan": _wo(lambda text: machine.rescan() if text.strip() == "1" else None),
            "enable": _rw(lambda: f"{kernel.enable_references(bdf)}\n",
                          lambda text: kernel.sysfs_enable(bdf, text)),
            "irq": _ro(lambda: "0\n"),
            "numa_node": _ro(lambda: "-1\n"),
        }
        for index, spec in sorted(function.bars.items()):
            # pci_create_resource_files: only for resources the kernel assigned, and only where the
            # architecture can mmap PCI resources (HAVE_PCI_MMAP / ARCH_GENERIC_PCI_MMAP_RESOURCE)
            if machine.resource_files and index in function.assigned:
                entries[f"resource{index}"] = Special(0o600, self._resource_opener(function, index))
                if spec.prefetchable:
                    entries[f"resource{index}_wc"] = Special(0o600, self._resource_opener(function, index))
            if spec.rebar_sizes:
                entries[f"resource{index}_resize"] = _rw(
                    lambda index=index: self._rebar_sizes(function, index),
                    lambda text, index=index: kernel.resize(bdf, index, text))
        methods = kernel.reset_methods(function)
        if methods:
            entries["reset"] = _wo(lambda text: self._reset_store(bdf, text))
            entries["reset_method"] = _rw(
                lambda: " ".join(kernel.selected_reset_methods(function)) + "\n",
                lambda text: kernel.set_reset_method(bdf, text))
        driver = kernel.driver_of(bdf)
        if driver is not None:
            entries["driver"] = Link(0o777, self._relative(here, f"/sys/bus/pci/drivers/{driver}"))
        group = kernel.group_of.get(bdf)
        if group is not None:
            entries["iommu_group"] = Link(0o777, self._relative(here, f"/sys/kernel/iommu_groups/{group}"))
        if function.pcie is not None:
            entries.update(self._link_attrs(function))
        irqs = machine.vfio.msi_vectors.get(bdf)
        if irqs:
            kind = "msix" if machine.vfio.msi_kind.get(bdf) else "msi"
            names = [str(data) for data, _ in irqs.values()]
            entries["msi_irqs"] = Dir(0o555, lambda: {name: _ro(lambda: f"{kind}\n") for name in names})
        if isinstance(function, Bridge):
            entries["secondary_bus_number"] = _ro(lambda: f"{function.secondary_bus}\n")
            entries["subordinate_bus_number"] = _ro(lambda: f"{function.subordinate_bus}\n")
            for child in function.children:
                if child.bdf in machine.functions:
                    entries[child.bdf] = self._device_dir(child)
        return entries

    def _link_attrs(self, function: PCIFunction) -> dict[str, Node]:
        exp = function.cap_offsets[pci_regs.PCI_CAP_ID_EXP]

        def lnkcap() -> int:
            return function.cfg.read(exp + pci_regs.PCI_EXP_LNKCAP, 4)

        def lnksta() -> int:
            return function.cfg.read(exp + pci_regs.PCI_EXP_LNKSTA, 2)

        def speed(code: int) -> str:
            return LINK_SPEED_NAMES.get(code, "Unknown") + "\n"
        return {
            "max_link_speed": _ro(lambda: speed(field_get(lnkcap(), pci_regs.PCI_EXP_LNKCAP_SLS))),
            "max_link_width": _ro(lambda: f"{field_get(lnkcap(), pci_regs.PCI_EXP_LNKCAP_MLW)}\n"),
            "current_link_speed": _ro(lambda: speed(field_get(lnksta(), pci_regs.PCI_EXP_LNKSTA_CLS))),
            "current_link_width": _ro(lambda: f"{field_get(lnksta(), pci_regs.PCI_EXP_LNKSTA_NLW)}\n"),
        }

    def _sys_relative(self, bdf: str) -> str:
        return self.device_path(self.machine.functions[bdf]).removeprefix("/sys/")

    def _group_opener(self, group: int) -> Callable[[str, int], MockFile]:
        return lambda path, flags: self.machine.open_group(path, group)

    def _resource_opener(self, function: PCIFunction, index: int) -> Callable[[str, int], MockFile]:
        return lambda path, flags: ResourceFile(path, self.machine.kernel, function, index)

    def _reset_store(self, bdf: str, text: str) -> None:
        """drivers/pci/pci-sysfs.c reset_store: exactly 1 (kstrtoul), anything else is EINVAL."""
        if parse_unsigned(text) != 1:
            raise OSError(errno.EINVAL, f"write 1 to reset {bdf}, not {text.strip()!r}")
        self.machine.kernel.reset_function(bdf)

    def _rebar_sizes(self, function: PCIFunction, index: int) -> str:
        sizes = 0
        for size in function.bars[index].rebar_sizes:
            sizes |= 1 << ((size // REBAR_UNIT).bit_length() - 1)
        return f"{sizes:016x}\n"

    def _resource_table(self, function: PCIFunction) -> str:
        lines = []
        count = BRIDGE_RESOURCE_LINES if isinstance(function, Bridge) else ENDPOINT_RESOURCE_LINES
        for index in range(count):
            rng = self.machine.kernel.resource_range(function, index) if index < ROM_RESOURCE else None
            if rng is None:
                lines.append(f"0x{0:016x} 0x{0:016x} 0x{0:016x}")
                continue
            spec = function.bars[index]
            flags = IORESOURCE_SIZEALIGN | spec.type_bits
            if spec.kind is BarKind.IO:
                flags |= IORESOURCE_IO
            else:
                flags |= IORESOURCE_MEM
                if spec.prefetchable:
                    flags |= IORESOURCE_PREFETCH
                if spec.kind is BarKind.MEM64:
                    flags |= IORESOURCE_MEM_64
            lines.append(f"0x{rng[0]:016x} 0x{rng[1]:016x} 0x{flags:016x}")
        return "\n".join(lines) + "\n"
