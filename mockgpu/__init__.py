"""mockgpu: the simulated machine (fake kernel + PCI bus + device models + fault injection).

`Machine.default()` builds the standard topology; `Machine.os` is the hal.os.OS seam over it.
See docs/mockgpu.md for the topology, the edu register map and how device models plug in.
"""
from mockgpu.edu import EduDevice
from mockgpu.machine import EDU_BDF, GPU_AUDIO_BDF, GPU_BDF, Machine
from mockgpu.navi31 import Navi31Audio, Navi31Function
from mockgpu.pci import BarKind, BarSpec, Bridge, Identity, MSIXLayout, PCIeInfo, PCIeLink, PCIFunction
from mockgpu.ports import RootPort, SwitchDownstreamPort, SwitchUpstreamPort

__all__ = [
    "Machine", "EDU_BDF", "GPU_BDF", "GPU_AUDIO_BDF",
    "PCIFunction", "Bridge", "BarSpec", "BarKind", "Identity", "PCIeInfo", "PCIeLink", "MSIXLayout",
    "EduDevice", "Navi31Function", "Navi31Audio", "RootPort", "SwitchUpstreamPort", "SwitchDownstreamPort",
]
