"""The IP block interface every AM block implements, and the bounded register poll they share.

A block's lifecycle follows amdgpu's (drivers/gpu/drm/amd/amdgpu/amdgpu_device.c): sw_init prepares
state and binds registers without touching the hardware, hw_init programs it, hw_fini undoes hw_init
and sw_fini undoes sw_init. The device (drivers.am.device.AMDevice) orders the blocks and calls
each teardown step only for the steps that succeeded.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from hal.errors import DeviceTimeout

if TYPE_CHECKING:
    from drivers.am.device import AMDevice
    from drivers.am.regs import BoundRegister

POLL_INTERVAL_S = 0.001  # pause between reads in poll()


class IPBlock:
    """One IP block of one version. Subclasses set `block` and `versions` and override the hooks."""

    block: ClassVar[str] = ""  # amdgpu's block name: "NBIO", "HDP", "GC"...
    versions: ClassVar[tuple[tuple[int, int, int], ...]] = ()  # the IP versions this class serves

    def __init__(self, device: "AMDevice") -> None:
        self.device = device

    @property
    def name(self) -> str:
        return f"{self.block} {'/'.join('.'.join(map(str, v)) for v in self.versions)}"

    def sw_init(self) -> None:
        """Prepare state and bind registers; no MMIO."""

    def hw_init(self) -> None:
        """Program the hardware."""

    def warm_init(self) -> None:
        """Attach to hardware a previous owner left up (drivers.am.boot): bind to the existing
        rings and tables without reloading firmware. By default hw_init, for blocks whose
        programming is safe to repeat."""
        self.hw_init()

    def hw_fini(self) -> None:
        """Undo hw_init."""

    def sw_fini(self) -> None:
        """Undo sw_init."""


def poll(device: "AMDevice", register: "BoundRegister", mask: int, expected: int, timeout_s: float,
         what: str) -> int:
    """Read `register` until (value & mask) == expected; returns the last value.

    DeviceTimeout names the block, register, expectation and last value; a device that fell off the
    bus raises DeviceLost on the read that sees all ones (hal's watched BAR)."""
    os = device.pci.os
    deadline = os.monotonic() + timeout_s
    value = register.read()
    while value & mask != expected:
        if os.monotonic() >= deadline:
            raise DeviceTimeout(
                f"{device.pci.bdf}: {register.block} {register.name} & {mask:#010x} did not become "
                f"{expected:#010x} within {timeout_s} s waiting for {what} (last value {value:#010x})")
        os.sleep(POLL_INTERVAL_S)
        value = register.read()
    return value
