"""The NVIDIA kernel driver's RM interface: /dev/nvidiactl escapes, RM objects, CPU mappings.

`RM.open(os)` opens /dev/nvidiactl, asks the RM its version (the NV_ESC_CHECK_VERSION_STR query; the
block's layout is the same in every branch), checks it against /proc/driver/nvidia/version where that
file exists (a sandbox that proxies the device nodes may not show the host's procfs entry), refuses a
branch without bindings and allocates the root client. On it: `card_info()`,
`alloc(parent, cls, params)`, `control(obj, cmd, params)`, `free(obj)` (the RM frees the object's
children with it), `map_to_cpu(device, memory, ...)` (an NV_ESC_RM_MAP_MEMORY on a fresh
/dev/nvidiaN fd, then mmap of that fd), `register_fd`, `alloc_os_event`. `close()` frees what is left in reverse allocation order and reports leaks.

Escapes are `_IOWR(NV_IOCTL_MAGIC, escape, size)` ioctls (kernel-open/common/inc/nv-ioctl-numbers.h);
the RM's verdict comes back in the block's `status`, decoded to its name in `RMError`. Pointers inside
blocks (pAllocParms, params) point into a small argument arena of the seam's host memory.
"""
from __future__ import annotations

import dataclasses
import errno
import logging
import re

from autogen.nv.r535 import classes as cl
from autogen.nv.r535 import escape as esc
from autogen.nv.r535 import nvos
from autogen.nv.r535 import status as nv_status
from drivers.nv import abi as nv_abi
from drivers.nv.errors import RMError, UnsupportedDriver, status_name
from hal.errors import DeviceNotFound, HalError, InvalidArgument, from_oserror
from hal.os import O_CLOEXEC, O_RDWR, OS, PAGE_SIZE
from hal.region import Region

log = logging.getLogger(__name__)

CTL_PATH = "/dev/nvidiactl"
DEVICE_PATH = "/dev/nvidia{minor}"
VERSION_PATH = "/proc/driver/nvidia/version"
# branches with bindings (autogen/nv/r<branch>/, drivers/nv/abi.py): the running driver's major version
SUPPORTED_BRANCHES = nv_abi.SUPPORTED_BRANCHES
# kernel-open/nvidia/nv-procfs.c nv_procfs_read_version: "NVRM version: NVIDIA UNIX ... Kernel
# Module for <arch>  <version>  Release Build ..."
_VERSION_LINE = re.compile(r"NVRM version:.*?Kernel Module(?: for \S+)?\s+(\d+\.\d+(?:\.\d+)?)")

# include/uapi/asm-generic/ioctl.h: _IOWR(type, nr, size) = (READ|WRITE) << 30 | size << 16 | type << 8 | nr
_IOC_READ_WRITE = 3
_IOC_DIR_SHIFT = 30
_IOC_SIZE_SHIFT = 16
_IOC_TYPE_SHIFT = 8
ARENA_SIZE = 64 << 10  # pointer-carried blocks: the largest here (NV_CHANNEL_ALLOC_PARAMS) is 360 bytes
# where a block that a parameter block points to (an embedded pointer, such as
# NV2080_CTRL_GR_GET_INFO_PARAMS.grInfoList) is placed: the upper half of the arena
EMBEDDED_OFFSET = ARENA_SIZE // 2
# cl0080.h NV0080_MAX_DEVICES (= NV_MAX_DEVICES): the most GPUs one driver probes
MAX_CARDS = cl.NV0080_MAX_DEVICES


def escape_request(escape: int, size: int) -> int:
    """The ioctl request of an NVIDIA escape with a `size`-byte block (nv-ioctl-numbers.h)."""
    return ((_IOC_READ_WRITE << _IOC_DIR_SHIFT) | (size << _IOC_SIZE_SHIFT)
            | (esc.NV_IOCTL_MAGIC << _IOC_TYPE_SHIFT) | escape)


def driver_version(os: OS) -> str | None:
    """The running kernel driver's version ("535.261.03") from /proc/driver/nvidia/version; None when
    the file does not exist."""
    try:
        text = os.read_text(VERSION_PATH)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return None
        raise from_oserror(exc, f"reading {VERSION_PATH}") from exc
    match = _VERSION_LINE.search(text)
    if match is None:
        raise HalError(f"{VERSION_PATH} has no 'NVRM version' line with a version: {text[:200]!r}")
    return match.group(1)


def query_version(os: OS, ctl_fd: int) -> str:
    """The RM's own version string: NV_ESC_CHECK_VERSION_STR with NV_RM_API_VERSION_CMD_QUERY (osapi.c
    RmPerformVersionCheck copies NV_VERSION_STRING back and sets reply RECOGNIZED). The block is
    nv_ioctl_rm_api_version of every supported branch (tests/nv/test_rm_version.py compares them), so
    it is asked before the branch is known."""
    query = esc.nv_ioctl_rm_api_version(cmd=esc.NV_RM_API_VERSION_CMD_QUERY)
    request = escape_request(esc.NV_ESC_CHECK_VERSION_STR, type(query).SIZE)
    try:
        os.ioctl(ctl_fd, request, query.buffer)
    except OSError as exc:
        raise from_oserror(exc, f"version query (escape {esc.NV_ESC_CHECK_VERSION_STR:#x})") from exc
    if query.reply != esc.NV_RM_API_VERSION_REPLY_RECOGNIZED:
        raise UnsupportedDriver(f"the RM did not recognise the version query (reply {query.reply}): "
                                f"the module behind {CTL_PATH} is not a driver this code knows",
                                version="", branch="")
    return bytes(query.versionString).split(b"\0")[0].decode(errors="replace")


def check_branch(version: str) -> str:
    """The branch of `version` ("535"), or UnsupportedDriver naming it and the supported ones."""
    branch = version.split(".")[0]
    if branch not in SUPPORTED_BRANCHES:
        supported = ", ".join(f"r{name}" for name in SUPPORTED_BRANCHES)
        raise UnsupportedDriver(
            f"NVIDIA kernel driver {version} (branch r{branch}) is not supported: its RM ABI has no "
            f"bindings here (supported branches: {supported}); install a supported driver or add the "
            f"branch's autogen targets", version=version, branch=branch)
    return branch


class ArgumentArena:
    """Host memory for blocks that escapes reach through a pointer (copy_from_user in the kernel)."""

    def __init__(self, os: OS, size: int = ARENA_SIZE) -> None:
        self.os = os
        self.memory = os.alloc_pages(size)
        self.size = self.memory.size

    def place(self, block) -> int:
        """Copy a Struct into the arena; returns its user address (0 for None)."""
        if block is None:
            return 0
        data = bytes(block)
        if len(data) > EMBEDDED_OFFSET:
            raise InvalidArgument(f"a {len(data)}-byte parameter block does not fit the "
                                  f"{EMBEDDED_OFFSET}-byte lower half of the arena")
        self.memory.region.write(0, data)
        return self.memory.addr

    def read_back(self, block) -> None:
        """Copy what the kernel wrote (copy_to_user) back into `block`."""
        if block is not None:
            block.buffer[:] = self.memory.region.read(0, type(block).SIZE)

    def place_embedded(self, data: bytes) -> int:
        """Copy a block that the next parameter block points to (the RM copies it in and out
        separately: embedded_param_copy.c) above the parameter block; returns its user address."""
        if len(data) > self.size - EMBEDDED_OFFSET:
            raise InvalidArgument(f"a {len(data)}-byte embedded block does not fit the "
                                  f"{self.size - EMBEDDED_OFFSET}-byte half of the arena")
        self.memory.region.write(EMBEDDED_OFFSET, bytes(data))
        return self.memory.addr + EMBEDDED_OFFSET

    def read_embedded(self, size: int) -> bytes:
        """The embedded block as the kernel left it (copied out after the control)."""
        return self.memory.region.read(EMBEDDED_OFFSET, size)

    def close(self) -> None:
        self.os.free_locked(self.memory)


@dataclasses.dataclass(eq=False)
class RMObject:
    """A handle the RM gave us, its class and where it hangs in the tree."""

    handle: int
    cls: int
    parent: "RMObject | None" = dataclasses.field(repr=False)
    name: str = ""
    children: list["RMObject"] = dataclasses.field(default_factory=list, repr=False)
    freed: bool = False

    def __str__(self) -> str:
        label = f" {self.name}" if self.name else ""
        return f"{self.handle:#010x} (class {self.cls:#06x}{label})"


@dataclasses.dataclass(eq=False)
class CPUMapping:
    """A CPU view of an RM memory object: `region`, the /dev/nvidiaN fd that backs it."""

    device: RMObject
    memory: RMObject
    region: Region
    fd: int
    linear_address: int


class RM:
    """One process's session with the RM: the control fd, the root client and its objects."""

    def __init__(self, os: OS, version: str, branch: str, ctl_fd: int, arena: ArgumentArena) -> None:
        self.os = os
        self.version = version
        self.branch = branch
        self.abi = nv_abi.for_branch(branch)  # the branch's parameter-block layouts
        self.ctl_fd = ctl_fd
        self.arena = arena
        self.objects: list[RMObject] = []  # allocation order; freed ones removed
        self.mappings: list[CPUMapping] = []
        self.root: RMObject | None = None

    @classmethod
    def open(cls, os: OS) -> "RM":
        """Open /dev/nvidiactl, check the driver's version and branch, allocate the root client."""
        proc_version = driver_version(os)
        try:
            ctl_fd = os.open(CTL_PATH, O_RDWR | O_CLOEXEC)
        except OSError as exc:
            if exc.errno == errno.ENOENT and proc_version is None:
                raise DeviceNotFound(f"neither {CTL_PATH} nor {VERSION_PATH} exists: the NVIDIA kernel "
                                     f"driver is not loaded (modprobe nvidia nvidia-uvm)",
                                     errno=exc.errno) from exc
            raise from_oserror(exc, f"opening {CTL_PATH}") from exc
        arena = None
        try:
            version = query_version(os, ctl_fd)
            if proc_version is not None and proc_version != version:
                raise UnsupportedDriver(f"{VERSION_PATH} says {proc_version} but the RM answers "
                                        f"{version!r}: the loaded module and /proc disagree; "
                                        f"reload the driver",
                                        version=version, branch=version.split(".")[0])
            branch = check_branch(version)
            arena = ArgumentArena(os)
            rm = cls(os, version, branch, ctl_fd, arena)
            rm.root = rm.alloc(None, nvos.NV01_ROOT_CLIENT, name="root client")
        except BaseException:
            if arena is not None:
                arena.close()
            os.close(ctl_fd)
            raise
        return rm

    # -- escapes ---------------------------------------------------------------------------------
    def escape(self, fd: int, escape: int, block, what: str) -> None:
        """Issue an escape with `block` (a Struct, updated in place); OSError becomes a HalError."""
        request = escape_request(escape, type(block).SIZE)
        try:
            self.os.ioctl(fd, request, block.buffer)
        except OSError as exc:
            log.debug("escape %#x %s: errno %d", escape, what, exc.errno)
            raise from_oserror(exc, f"{what} (escape {escape:#x})") from exc
        if log.isEnabledFor(logging.DEBUG):
            status = getattr(block, "status", nv_status.NV_OK)
            log.debug("escape %#x %s: %s", escape, what, status_name(status))

    def card_info(self) -> list:
        """The GPUs the driver has probed (NV_ESC_CARD_INFO), valid entries only."""
        cards = bytearray(self.abi.escape.nv_ioctl_card_info.SIZE * MAX_CARDS)
        request = escape_request(esc.NV_ESC_CARD_INFO, len(cards))
        try:
            self.os.ioctl(self.ctl_fd, request, cards)
        except OSError as exc:
            raise from_oserror(exc, "card info (NV_ESC_CARD_INFO)") from exc
        found = []
        size = self.abi.escape.nv_ioctl_card_info.SIZE
        for index in range(MAX_CARDS):
            record = bytes(cards[index * size:(index + 1) * size])
            info = self.abi.escape.nv_ioctl_card_info.from_bytes(record)
            if info.valid:
                found.append(info)
        return found

    def open_control(self) -> int:
        """Another /dev/nvidiactl fd (a system-memory mapping lives on its own fd)."""
        try:
            return self.os.open(CTL_PATH, O_RDWR | O_CLOEXEC)
        except OSError as exc:
            raise from_oserror(exc, f"opening {CTL_PATH}") from exc

    def open_device(self, minor: int) -> int:
        """Open /dev/nvidia<minor> and register it with the control fd (NV_ESC_REGISTER_FD)."""
        path = DEVICE_PATH.format(minor=minor)
        try:
            fd = self.os.open(path, O_RDWR | O_CLOEXEC)
        except OSError as exc:
            raise from_oserror(exc, f"opening {path}") from exc
        try:
            self.escape(fd, esc.NV_ESC_REGISTER_FD, self.abi.escape.nv_ioctl_register_fd(ctl_fd=self.ctl_fd),
                        f"registering {path}")
        except BaseException:
            self.os.close(fd)
            raise
        return fd

    # -- objects -----------------------------------------------------------------------------------
    def alloc(self, parent: RMObject | None, cls: int, params=None, handle: int = 0,
              name: str = "") -> RMObject:
        """NV_ESC_RM_ALLOC of class `cls` under `parent` (None: a root client); RMError on failure."""
        root = self.root.handle if self.root is not None else 0
        parent_handle = parent.handle if parent is not None else 0
        block = self.abi.nvos.NVOS21_PARAMETERS(hRoot=root, hObjectParent=parent_handle, hObjectNew=handle,
                                                hClass=cls, pAllocParms=self.arena.place(params),
                                                paramsSize=type(params).SIZE if params is not None else 0)
        what = f"allocating class {cls:#x}" + (f" ({name})" if name else "") + f" under {parent_handle:#x}"
        self.escape(self.ctl_fd, esc.NV_ESC_RM_ALLOC, block, what)
        self.arena.read_back(params)
        if block.status != nv_status.NV_OK:
            raise RMError(what, block.status)
        obj = RMObject(block.hObjectNew, cls, parent, name)
        if parent is not None:
            parent.children.append(obj)
        self.objects.append(obj)
        log.debug("RM alloc %s", obj)
        return obj

    def control(self, obj: RMObject, cmd: int, params) -> object:
        """NV_ESC_RM_CONTROL `cmd` on `obj` with `params` (updated in place and returned)."""
        block = self.abi.nvos.NVOS54_PARAMETERS(hClient=self.root.handle, hObject=obj.handle, cmd=cmd,
                                                params=self.arena.place(params),
                                                paramsSize=type(params).SIZE)
        what = f"control {cmd:#010x} on {obj}"
        self.escape(self.ctl_fd, esc.NV_ESC_RM_CONTROL, block, what)
        self.arena.read_back(params)
        if block.status != nv_status.NV_OK:
            raise RMError(what, block.status)
        return params

    def free(self, obj: RMObject) -> None:
        """NV_ESC_RM_FREE: the RM frees `obj` and everything allocated under it."""
        if obj.freed:
            raise InvalidArgument(f"{obj} was freed already")
        for mapping in [m for m in self.mappings if _below(m.memory, obj)]:
            self.unmap(mapping)
        parent = obj.parent.handle if obj.parent is not None else 0
        block = self.abi.nvos.NVOS00_PARAMETERS(hRoot=self.root.handle, hObjectParent=parent,
                                                hObjectOld=obj.handle)
        self.escape(self.ctl_fd, esc.NV_ESC_RM_FREE, block, f"freeing {obj}")
        if block.status != nv_status.NV_OK:
            raise RMError(f"freeing {obj}", block.status)
        self._forget(obj)

    def _forget(self, obj: RMObject) -> None:
        for child in list(obj.children):
            self._forget(child)
        obj.freed = True
        if obj in self.objects:
            self.objects.remove(obj)
        if obj.parent is not None and obj in obj.parent.children:
            obj.parent.children.remove(obj)

    # -- CPU mappings -------------------------------------------------------------------------------
    def map_to_cpu(self, device: RMObject, memory: RMObject, size: int, minor: int, offset: int = 0,
                   flags: int = 0, system: bool = False) -> CPUMapping:
        """Map `size` bytes of `memory` at `offset` into this process: NV_ESC_RM_MAP_MEMORY names a
        fresh fd, whose mmap at offset 0 then gives the pages (nv-mmap.c). VRAM and register
        windows go through /dev/nvidia<minor>; system memory (`system`) through /dev/nvidiactl,
        which maps system memory (nv-mmap.c nvidia_mmap_helper, osapi.c RmCreateMmapContextLocked)."""
        fd = self.open_control() if system else self.open_device(minor)
        try:
            params = self.abi.nvos.NVOS33_PARAMETERS(hClient=self.root.handle, hDevice=device.handle,
                                                     hMemory=memory.handle, offset=offset, length=size,
                                                     flags=flags)
            block = self.abi.nvos.nv_ioctl_nvos33_parameters_with_fd(params=params, fd=fd)
            what = f"mapping {size:#x} bytes of {memory} at {offset:#x}"
            self.escape(self.ctl_fd, esc.NV_ESC_RM_MAP_MEMORY, block, what)
            if block.params.status != nv_status.NV_OK:
                raise RMError(what, block.params.status)
            mapped = -(-size // PAGE_SIZE) * PAGE_SIZE
            try:
                region = self.os.mmap(fd, mapped, 0)
            except OSError as exc:
                raise from_oserror(exc, f"mmap of {mapped:#x} bytes for {memory}") from exc
        except BaseException:
            self.os.close(fd)
            raise
        mapping = CPUMapping(device, memory, region, fd, block.params.pLinearAddress)
        self.mappings.append(mapping)
        return mapping

    def unmap(self, mapping: CPUMapping) -> None:
        """NV_ESC_RM_UNMAP_MEMORY and munmap; the fd behind the mapping is closed."""
        self.mappings.remove(mapping)
        try:
            self.os.munmap(mapping.region)
        finally:
            block = self.abi.nvos.NVOS34_PARAMETERS(hClient=self.root.handle, hDevice=mapping.device.handle,
                                                    hMemory=mapping.memory.handle,
                                                    pLinearAddress=mapping.linear_address)
            try:
                if not mapping.memory.freed:
                    self.escape(self.ctl_fd, esc.NV_ESC_RM_UNMAP_MEMORY, block,
                                f"unmapping {mapping.memory}")
            finally:
                self.os.close(mapping.fd)
        if block.status != nv_status.NV_OK and not mapping.memory.freed:
            raise RMError(f"unmapping {mapping.memory}", block.status)

    def alloc_os_event(self, device: RMObject, fd: int) -> None:
        """NV_ESC_ALLOC_OS_EVENT: `fd` receives the events of `device` for this client."""
        block = self.abi.escape.nv_ioctl_alloc_os_event(hClient=self.root.handle, hDevice=device.handle,
                                                        fd=fd)
        self.escape(self.ctl_fd, esc.NV_ESC_ALLOC_OS_EVENT, block, f"OS event on {device}")
        if block.Status != nv_status.NV_OK:
            raise RMError(f"OS event on {device}", block.Status)

    # -- teardown -------------------------------------------------------------------------------------
    def leaks(self) -> list[RMObject]:
        """Objects still allocated besides the root client."""
        return [obj for obj in self.objects if obj is not self.root]

    def free_all(self) -> None:
        """Unmap every CPU mapping and free every object but the root client, newest first."""
        for mapping in list(reversed(self.mappings)):
            self.unmap(mapping)
        for obj in reversed(list(self.objects)):
            if not obj.freed and obj is not self.root:
                self.free(obj)

    def close(self, strict: bool = False) -> list[RMObject]:
        """Unmap, free what is left in reverse allocation order, free the client, close the fd.

        Returns the objects that were still allocated (leaks); with `strict`, raises ResourceLeak
        naming them after cleaning up."""
        leaked = self.leaks()
        try:
            self.free_all()
            if self.root is not None and not self.root.freed:
                self.free(self.root)
        finally:
            self.os.close(self.ctl_fd)
            self.arena.close()
        if leaked:
            log.warning("RM objects still allocated at close: %s", ", ".join(map(str, leaked)))
            if strict:
                raise ResourceLeak(leaked)
        return leaked


class ResourceLeak(HalError):
    """RM objects were still allocated when their owner closed (they are freed now)."""

    def __init__(self, objects: list[RMObject]) -> None:
        self.objects = objects
        super().__init__(f"{len(objects)} RM object(s) still allocated at close, freed now: "
                         + ", ".join(map(str, objects)) + "; free them (in reverse order) before closing")


def _below(obj: RMObject, ancestor: RMObject) -> bool:
    while obj is not None:
        if obj is ancestor:
            return True
        obj = obj.parent
    return False

