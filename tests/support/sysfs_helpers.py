"""Helpers shared by the hal and mock machine tests: the simulated kernel's sysfs driven the way user
space drives Linux's."""
from __future__ import annotations

from mockgpu import Machine


def bind_to_vfio(machine: Machine, bdf: str) -> None:
    """Move `bdf` to vfio-pci: driver_override, unbind the driver it has, then drivers_probe."""
    base = f"/sys/bus/pci/devices/{bdf}"
    machine.os.write_text(f"{base}/driver_override", "vfio-pci")
    if machine.os.exists(f"{base}/driver"):
        driver = machine.os.readlink(f"{base}/driver").rsplit("/", 1)[-1]
        machine.os.write_text(f"/sys/bus/pci/drivers/{driver}/unbind", bdf)
    machine.os.write_text("/sys/bus/pci/drivers_probe", bdf)
