"""Discovery and selection: list PCI devices with what each backend thinks of them, and open one.

`list_devices` reads the sysfs PCI tree through the seam; `open_device` parses a device string,
takes the ownership lock, detaches the kernel driver when asked (remembering it so close() can hand
the device back), opens the chosen backend (or tries each in turn, reporting every reason when all
fail) and returns a PCIDevice with memory decoding and bus mastering on.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from hal import devstring
from autogen.linux import pci_regs

from hal.errors import BackendUnavailable, DeviceBusy, HalError, InvalidArgument, UnsupportedOperation
from hal.lock import OwnershipLock
from hal.os import OS, host
from hal.pci import backend as pci_backend
from hal.pci.sysfs import LARGEST_BAR_SIZE, PCI_DRIVERS, SysfsPCI
from hal.pcidev import PCIDevice
from hal.trace import traceable

log = logging.getLogger(__name__)

# include/linux/pci_ids.h PCI_BASE_CLASS_DISPLAY: base class 0x03 (VGA, XGA, 3D, other display)
PCI_BASE_CLASS_DISPLAY = 0x03
CLASS_BASE_SHIFT = 16  # the 24-bit class code is base class : subclass : programming interface


@dataclass
class DeviceInfo:
    """One PCI function as discovery sees it. `backends` maps a backend name to "ok" or the reason
    it cannot open the device; `path` lists the bridges from the root port down."""

    device: str
    bdf: str
    vendor_id: int
    device_id: int
    class_code: int
    driver: str | None
    backends: dict[str, str] = field(default_factory=dict)
    path: list[str] = field(default_factory=list)
    subsystem_vendor_id: int | None = None
    subsystem_device_id: int | None = None
    iommu_group: int | None = None
    # what must move to vfio-pci before VFIO can open it: the function itself unless it is there
    # already, and the group members on drivers that use the kernel's DMA API (empty: nothing
    # to move, or VFIO cannot open it at all)
    vfio_moves: list[str] = field(default_factory=list)


def _probe_backends(os: OS, bdf: str) -> dict[str, str]:
    from hal.vfio import backend as vfio_backend

    probes = {"vfio": vfio_backend.probe, "pci": pci_backend.probe}
    reasons = {}
    for name in devstring.BACKEND_NAMES:
        try:
            reasons[name] = probes[name](os, bdf)
        except HalError as exc:
            reasons[name] = str(exc)
    return reasons


def _optional_hex(sysfs: SysfsPCI, bdf: str, name: str) -> int | None:
    try:
        return sysfs.read_hex(bdf, name)
    except HalError:
        return None


def _vfio_moves(sysfs: SysfsPCI, bdf: str, group: int | None, vfio_verdict: str) -> list[str]:
    """The functions to bind to vfio-pci before VFIO can open `bdf` (see DeviceInfo.vfio_moves)."""
    from hal.vfio import backend as vfio_backend

    # only a binding stands in the way: the verdict names a kernel driver or the shared group
    curable = (vfio_backend.IN_USE_PREFIX, vfio_backend.SHARED_PREFIX)
    if group is None or not vfio_verdict.startswith(curable):
        return []
    moves = [] if sysfs.driver(bdf) == vfio_backend.VFIO_DRIVER else [bdf]
    moves += [member for member, _ in vfio_backend.members_to_move(sysfs, bdf, group)]
    return moves


def describe(os: OS, bdf: str) -> DeviceInfo:
    sysfs = SysfsPCI(os)
    backends = _probe_backends(os, bdf)
    preferred = next((name for name in devstring.BACKEND_NAMES if backends[name].startswith("ok")), None)
    group = sysfs.iommu_group(bdf)
    return DeviceInfo(
        device=f"{preferred}:{bdf}" if preferred else bdf,
        bdf=bdf,
        vendor_id=sysfs.read_hex(bdf, "vendor"),
        device_id=sysfs.read_hex(bdf, "device"),
        class_code=sysfs.read_hex(bdf, "class"),
        driver=sysfs.driver(bdf),
        backends=backends,
        path=sysfs.upstream_path(bdf),
        subsystem_vendor_id=_optional_hex(sysfs, bdf, "subsystem_vendor"),
        subsystem_device_id=_optional_hex(sysfs, bdf, "subsystem_device"),
        iommu_group=group,
        vfio_moves=_vfio_moves(sysfs, bdf, group, backends.get("vfio", "")),
    )


def list_devices(os: OS | None = None, all_classes: bool = False) -> list[DeviceInfo]:
    """Display-class PCI functions (every function with all_classes), in BDF order."""
    os = os or host()
    sysfs = SysfsPCI(os)
    found = []
    for bdf in sysfs.list_bdfs():
        try:
            class_code = sysfs.read_hex(bdf, "class")
            if not all_classes and class_code >> CLASS_BASE_SHIFT != PCI_BASE_CLASS_DISPLAY:
                continue
            found.append(describe(os, bdf))
        except HalError as exc:
            log.warning("skipping %s: %s", bdf, exc)
    return found


@traceable  # trace=path, record() or $GPUHAL_TRACE: hal.trace records the opened device
def open_device(device: str | None, os: OS | None = None, *, unbind: bool = False,
                rebind_on_close: bool = True, lock_dir: str | None = None,
                noiommu: bool = False, bar_sizes: dict[int, int | str] | None = None) -> PCIDevice:
    """Open a device string (see hal.devstring) and return its PCIDevice.

    unbind: detach a bound kernel driver (for vfio:, bind vfio-pci instead); without it a bound
    driver is an error. rebind_on_close: on close(), undo what open changed (the driver it had, or no
    driver and no override when vfio: bound vfio-pci to a driverless device).
    lock_dir: where the ownership lock lives (default $GPUHAL_LOCK_DIR or /run/lock).
    noiommu: allow VFIO's unsafe no-IOMMU mode (no DMA isolation).
    bar_sizes: Resizable BAR sizes to set while the device has no driver, {BAR index: bytes, or
    "max" for the largest size the bridge windows leave room for}. The kernel resizes only
    driverless devices, so for vfio: this happens between unbinding the kernel driver (or vfio-pci)
    and binding vfio-pci; a refusal is a typed error and the device goes back to its driver.
    """
    wanted = devstring.parse(device)
    if wanted.backend in devstring.SOCKET_BACKENDS:
        return _open_socket(wanted)
    os = os or host()
    if wanted.backend == devstring.USB_BACKEND:
        if bar_sizes:
            raise UnsupportedOperation(f"usb:{wanted.bdf}: BARs cannot be resized behind a USB bridge "
                                       "(the backend assigns them at their power-on sizes)")
        return _open_usb(os, wanted.bdf, lock_dir)
    _check_bar_sizes(bar_sizes)
    sysfs = SysfsPCI(os)
    sysfs.require(wanted.bdf)
    lock = OwnershipLock(os, wanted.bdf, lock_dir)
    lock.acquire()
    failures: list[tuple[str, HalError]] = []
    try:
        for name in wanted.candidates:
            try:
                return _open_with(name, os, wanted.bdf, lock, unbind, rebind_on_close, noiommu,
                                  bar_sizes or {})
            except HalError as exc:
                log.info("%s:%s: %s", name, wanted.bdf, exc)
                failures.append((name, exc))
    except BaseException:
        lock.release()
        raise
    lock.release()
    if len(failures) == 1:
        raise failures[0][1]
    reasons = "; ".join(f"{name}: {exc}" for name, exc in failures)
    raise BackendUnavailable(f"no backend could open {wanted.bdf}: {reasons}")


def _open_socket(wanted: devstring.DeviceString) -> PCIDevice:
    """remote: and tinygpu: devices: a connection to the process that owns the device (it holds
    the ownership lock and does the binding), so the local seam and lock play no part."""
    if wanted.backend == "tinygpu":
        from hal.macos import tinygpu

        return tinygpu.open_device(wanted.bdf)
    from hal.remote import client

    return client.open_remote(wanted.bdf)


def _open_usb(os: OS, path: str, lock_dir: str | None) -> PCIDevice:
    """usb: devices: the bridge at USB port `path`; the ownership lock is named after the port."""
    from hal.usb import backend as usb_backend

    lock = OwnershipLock(os, f"usb-{path}", lock_dir)
    lock.acquire()
    try:
        backend = usb_backend.open_backend(os, path)
        return _finish_open(backend, os, lock, None, False, False)
    except BaseException:
        lock.release()
        raise


def list_usb_devices(os: OS | None = None) -> list[DeviceInfo]:
    """ASM24xx USB-to-PCIe bridges on the USB buses, one DeviceInfo each with the bridge's USB
    vendor and product IDs (read-only: the bridge is not opened, and reaching the GPU behind it
    would mean programming the bridge's bus numbers)."""
    from hal.usb import backend as usb_backend

    os = os or host()
    found = []
    try:
        devices = os.usb_host().list()
    except HalError as exc:
        log.info("no USB devices listed: %s", exc)
        return []
    for path, identity in devices:
        if not usb_backend.is_bridge(identity.vendor_id, identity.product_id):
            continue
        verdict = (f"ok (ASM24xx bridge, {usb_backend.firmware_of(identity)} firmware; the GPU behind "
                   "it is identified when it is opened)")
        found.append(DeviceInfo(device=f"{devstring.USB_BACKEND}:{path}", bdf=path,
                                vendor_id=identity.vendor_id, device_id=identity.product_id,
                                class_code=0, driver=None, backends={devstring.USB_BACKEND: verdict},
                                path=[f"usb {path}"]))
    return found


def open_observer(device: str | None, os: OS | None = None) -> PCIDevice:
    """Open a device to look at it while another process may own it (a status tool).

    Through the sysfs backend whatever the device string names (config file and resourceN
    mappings need no driver change), without the ownership lock, without unbinding any driver and
    without writing config space (decoding and bus mastering stay as the owner left them).
    The caller must only read, and only registers whose reads have no side effects: writes and
    index/data windows belong to the owner. close() unmaps and closes; nothing is handed back.
    """
    os = os or host()
    wanted = devstring.parse(device)
    SysfsPCI(os).require(wanted.bdf)
    backend = pci_backend.open_backend(os, wanted.bdf)
    return PCIDevice(backend, os, rebind_on_close=False)


def _check_bar_sizes(bar_sizes: dict[int, int | str] | None) -> None:
    for index, size in (bar_sizes or {}).items():
        if not isinstance(index, int) or not 0 <= index < pci_regs.PCI_STD_NUM_BARS:
            raise InvalidArgument(f"bar_sizes key {index!r} is not a BAR index "
                                  f"0..{pci_regs.PCI_STD_NUM_BARS - 1}")
        is_size = isinstance(size, int) and not isinstance(size, bool) and size > 0
        if not is_size and size != LARGEST_BAR_SIZE:
            raise InvalidArgument(f"bar_sizes[{index}] is {size!r}: give a size in bytes or "
                                  f"{LARGEST_BAR_SIZE!r}")


def _open_with(name: str, os: OS, bdf: str, lock: OwnershipLock, unbind: bool,
               rebind_on_close: bool, noiommu: bool, bar_sizes: dict[int, int | str]) -> PCIDevice:
    if name == "vfio":
        return _open_vfio(os, bdf, lock, unbind, rebind_on_close, noiommu, bar_sizes)
    return _open_pci(os, bdf, lock, unbind, rebind_on_close, bar_sizes)


def _refuse_bound(bdf: str, driver: str, backend: str) -> DeviceBusy:
    return DeviceBusy(f"{bdf} is bound to kernel driver {driver}; open {backend}:{bdf} with unbind=True "
                      f"to detach it (it is handed back on close), or unbind it yourself: "
                      f"`echo {bdf} | sudo tee {PCI_DRIVERS}/{driver}/unbind`")


def _finish_open(backend, os: OS, lock: OwnershipLock, original: str | None, detached: bool,
                 rebind_on_close: bool) -> PCIDevice:
    """`detached`: open changed the binding (unbound `original`, or bound vfio-pci to a driverless device),
    so close() puts it back as it was: `original` bound, or no driver and no override."""
    device = PCIDevice(backend, os, original_driver=original if detached else None,
                       rebind_on_close=rebind_on_close, detached=detached)
    try:
        device.enable_bus_master()
    except BaseException:
        device.close(rebind=False)
        raise
    device.attach_lock(lock)
    return device


def _open_pci(os: OS, bdf: str, lock: OwnershipLock, unbind: bool, rebind_on_close: bool,
              bar_sizes: dict[int, int | str]) -> PCIDevice:
    sysfs = SysfsPCI(os)
    original = sysfs.driver(bdf)
    if original is not None and not unbind:
        raise _refuse_bound(bdf, original, "pci")
    backend = pci_backend.open_backend(os, bdf)
    try:
        # the override keeps a module load, drivers_probe or rescan from rebinding the kernel driver
        # while user space drives the device; rebind() on close clears it
        detached = sysfs.detach_for_user_space(bdf) is not None
    except BaseException:
        backend.close()
        raise
    try:
        if bar_sizes:
            # the device has no driver now (and the override keeps it so): what the kernel resizes
            sysfs.apply_bar_sizes(bdf, bar_sizes)
        return _finish_open(backend, os, lock, original, detached, rebind_on_close)
    except BaseException:
        backend.close()
        if detached:
            _hand_back_after_failure(sysfs, bdf, original)
        raise


def _open_vfio(os: OS, bdf: str, lock: OwnershipLock, unbind: bool, rebind_on_close: bool,
               noiommu: bool, bar_sizes: dict[int, int | str]) -> PCIDevice:
    from hal.vfio import backend as vfio_backend

    sysfs = SysfsPCI(os)
    # in no-IOMMU mode vfio-pci creates the group when it binds, so it cannot be checked before
    if not noiommu and sysfs.iommu_group(bdf) is None:
        raise BackendUnavailable(vfio_backend.NO_GROUP.format(bdf=bdf))
    if not os.exists(vfio_backend.CONTAINER_PATH):
        raise BackendUnavailable(vfio_backend.MISSING_VFIO.format(path=vfio_backend.CONTAINER_PATH, bdf=bdf))
    original = sysfs.driver(bdf)
    detached = False
    if original != vfio_backend.VFIO_DRIVER:
        if original is not None and not unbind:
            raise _refuse_bound(bdf, original, "vfio")
        if not os.exists(f"{PCI_DRIVERS}/{vfio_backend.VFIO_DRIVER}"):
            raise BackendUnavailable(f"the {vfio_backend.VFIO_DRIVER} driver is not loaded: "
                                     "`sudo modprobe vfio-pci`")
        # a group that cannot become viable would only be found out after unbinding the driver
        vfio_backend.require_viable_group(sysfs, bdf)
        detached = True

    def resize_while_unbound() -> None:
        sysfs.apply_bar_sizes(bdf, bar_sizes)

    try:
        if detached or bar_sizes:
            # the kernel resizes only a device without a driver: between the unbind and vfio-pci's bind
            sysfs.bind_to(bdf, vfio_backend.VFIO_DRIVER, resize_while_unbound if bar_sizes else None)
        backend = vfio_backend.open_backend(os, bdf, noiommu=noiommu)
        return _finish_open(backend, os, lock, original, detached, rebind_on_close)
    except BaseException:
        if detached or bar_sizes:
            _hand_back_after_failure(sysfs, bdf, original)
        raise


def _hand_back_after_failure(sysfs: SysfsPCI, bdf: str, original: str | None) -> None:
    """Undo a binding change of a failed open; a failure here is logged, the open's own error wins."""
    try:
        sysfs.rebind(bdf, original)
    except HalError as exc:
        log.warning("could not hand %s back to %s after the failed open: %s",
                    bdf, original or "no driver", exc)
