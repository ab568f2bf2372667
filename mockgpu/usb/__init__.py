"""The simulated USB side of the machine: the bus (`mockgpu.usb.bus`) and the ASM24xx
USB-to-PCIe bridge model (`mockgpu.usb.asm24xx`) with a device behind it.

`navi31_behind_bridge(machine, path, firmware, uas)` plugs a bridge at USB port `path` with a
Navi31 GPU model behind its PCIe port and returns (bridge, gpu).
"""
from __future__ import annotations

from mockgpu.usb.asm24xx import ASM24xxModel, DMAFault
from mockgpu.usb.bus import LinkModel, MockTransport, USBBus, USBFaults

DEFAULT_PATH = "1-2"


def navi31_behind_bridge(machine, path: str = DEFAULT_PATH, firmware: str = "custom",
                         uas: bool = True):
    """A bridge with `firmware` ("custom" or "stock"; `uas` False: stock speaks only BOT) at USB
    port `path` of `machine`, a Navi31 GPU on its downstream link. Returns (bridge, gpu)."""
    from mockgpu.amd.gpu import Navi31GPU

    bridge = ASM24xxModel(machine, firmware=firmware, uas=uas)
    gpu = bridge.attach(Navi31GPU())
    machine.usb.plug(path, bridge)
    return bridge, gpu


__all__ = ["ASM24xxModel", "DMAFault", "LinkModel", "MockTransport", "USBBus", "USBFaults",
           "navi31_behind_bridge", "DEFAULT_PATH"]
