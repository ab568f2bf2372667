"""PCIe ports of the simulated topology: root ports and the two halves of a switch.

Identities: root ports present as QEMU's generic PCIe root port; the switch is the AMD switch
that sits inside Navi-class cards between the slot and the GPU functions.
"""
from __future__ import annotations

from autogen.linux import pci_regs

from mockgpu.pci import Bridge, Identity, PCIeInfo, PCIeLink

REDHAT_VENDOR_ID = 0x1B36  # QEMU docs/specs/pci-ids.rst: Red Hat, Inc. (QEMU devices)
QEMU_ROOT_PORT_DEVICE_ID = 0x000C  # QEMU docs/specs/pci-ids.rst: PCIe root port
AMD_VENDOR_ID = 0x1002  # pci.ids: Advanced Micro Devices, Inc. [AMD/ATI]
NAVI_SWITCH_UPSTREAM_ID = 0x1478  # pci.ids: Navi 10 XL Upstream Port of PCI Express Switch
NAVI_SWITCH_DOWNSTREAM_ID = 0x1479  # pci.ids: Navi 10 XL Downstream Port of PCI Express Switch
PCI_BRIDGE_CLASS = 0x060400  # PCI code and ID assignment r1.11: PCI-to-PCI bridge, normal decode


def _link(speed: int, width: int) -> PCIeLink:
    return PCIeLink(max_speed=speed, max_width=width, speed=speed, width=width)


class RootPort(Bridge):
    """`hot_plug`: the port's slot advertises Hot-Plug Capable (Slot Capabilities HPC)."""

    def __init__(self, speed: int = pci_regs.PCI_EXP_LNKCAP_SLS_16_0GB, width: int = 16,
                 hot_plug: bool = False) -> None:
        identity = Identity(REDHAT_VENDOR_ID, QEMU_ROOT_PORT_DEVICE_ID, PCI_BRIDGE_CLASS)
        info = PCIeInfo(pci_regs.PCI_EXP_TYPE_ROOT_PORT, _link(speed, width), hot_plug=hot_plug)
        super().__init__(identity, info)


class SwitchUpstreamPort(Bridge):
    def __init__(self, speed: int = pci_regs.PCI_EXP_LNKCAP_SLS_16_0GB, width: int = 16) -> None:
        identity = Identity(AMD_VENDOR_ID, NAVI_SWITCH_UPSTREAM_ID, PCI_BRIDGE_CLASS)
        super().__init__(identity, PCIeInfo(pci_regs.PCI_EXP_TYPE_UPSTREAM, _link(speed, width)))


class SwitchDownstreamPort(Bridge):
    """`hot_plug`: the port's slot advertises Hot-Plug Capable, like a Thunderbolt/USB4 enclosure's."""

    def __init__(self, speed: int = pci_regs.PCI_EXP_LNKCAP_SLS_16_0GB, width: int = 16,
                 hot_plug: bool = False) -> None:
        identity = Identity(AMD_VENDOR_ID, NAVI_SWITCH_DOWNSTREAM_ID, PCI_BRIDGE_CLASS)
        info = PCIeInfo(pci_regs.PCI_EXP_TYPE_DOWNSTREAM, _link(speed, width), hot_plug=hot_plug)
        super().__init__(identity, info)
