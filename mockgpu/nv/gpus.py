"""Identities of the simulated NVIDIA GPUs: PCI ids, architecture, memory, and the RM classes each
generation's driver offers (what the RM's per-chip class list would accept).

The class lists are the engine classes of src/nvidia/generated/g_gpu_class_list.c
(gpuGetClassDescriptorList_GA100/_GA102/_AD102/_GH100) in the 535.261.03 open kernel modules, cut
to the classes this mock models; allocating any other engine class on that GPU is NV_ERR_INVALID_CLASS.
"""
from __future__ import annotations

import dataclasses

from autogen.nv.r535 import classes as cl
from autogen.nv.r535 import uvm

NVIDIA_VENDOR_ID = 0x10DE  # PCI-SIG vendor id of NVIDIA (include/linux/pci_ids.h PCI_VENDOR_ID_NVIDIA)
GIB = 1 << 30

# classes every Volta-and-later GPU's list carries (g_gpu_class_list.c, all four chips below)
_COMMON = (cl.NV01_DEVICE_0, cl.NV20_SUBDEVICE_0, cl.FERMI_VASPACE_A, cl.NV01_MEMORY_LOCAL_USER,
           cl.NV01_MEMORY_SYSTEM, cl.KEPLER_CHANNEL_GROUP_A, cl.FERMI_CONTEXT_SHARE_A,
           cl.VOLTA_USERMODE_A, cl.TURING_USERMODE_A, cl.AMPERE_USERMODE_A, cl.AMPERE_CHANNEL_GPFIFO_A)


@dataclasses.dataclass(frozen=True)
class GPUIdentity:
    """One simulated board: what the card-info escape, the GPU controls and the class checks report."""

    name: str
    chip: str  # the RM's chip name (GA100, GA102, AD102, GH100)
    architecture: str  # ampere, ada, hopper
    device_id: int
    vram_size: int
    classes: frozenset[int]
    compute_class: int
    copy_class: int
    gpfifo_class: int
    usermode_class: int
    # NV2080_CTRL_CMD_MC_GET_ARCH_INFO: the chip id split in architecture | implementation
    # (GA100 0x170, GA102 0x172, AD102 0x192, GH100 0x180; ids from kernel-open/nvidia-uvm/ctrl2080mc.h)
    arch_id: int = 0
    implementation: int = 0
    # the highest channel VA + 1 UVM accepts for a channel's context buffers (parent_gpu->max_channel_va:
    # kernel-open/nvidia-uvm/uvm_ampere.c and uvm_ada.c 1 << 40, uvm_hopper.c 1 << 57)
    max_channel_va: int = 1 << 40
    # NV2080_CTRL_CMD_GR_GET_INFO's answers (ctrl2080gr.h NV2080_CTRL_GR_INFO_INDEX_*): the chip's
    # GPCs, TPCs per GPC and SMs per TPC (LITTER_*: the whole die) and MAX_WARPS_PER_SM (`GR_SHAPES`)
    gpcs: int = 0
    tpcs_per_gpc: int = 0
    sms_per_tpc: int = 0
    max_warps_per_sm: int = 0

    @property
    def tpcs(self) -> int:
        return self.gpcs * self.tpcs_per_gpc

    @property
    def sm_version(self) -> str:
        return {"GA100": "sm_80", "GA102": "sm_86", "AD102": "sm_89", "GH100": "sm_90"}[self.chip]


AMPERE_MAX_CHANNEL_VA = 1 << 40  # uvm_ampere.c, uvm_ada.c: parent_gpu->max_channel_va
HOPPER_MAX_CHANNEL_VA = 1 << 57  # uvm_hopper.c: parent_gpu->max_channel_va
_CHIP_IDS = {"GA100": (uvm.NV2080_CTRL_MC_ARCH_INFO_ARCHITECTURE_GA100, 0),
             "GA102": (uvm.NV2080_CTRL_MC_ARCH_INFO_ARCHITECTURE_GA100, 2),
             "AD102": (uvm.NV2080_CTRL_MC_ARCH_INFO_ARCHITECTURE_AD100, 2),
             "GH100": (uvm.NV2080_CTRL_MC_ARCH_INFO_ARCHITECTURE_GH100, 0)}


# (GPCs, TPCs per GPC, SMs per TPC, max warps per SM) of each chip. The full-die GPC and TPC counts
# are those of NVIDIA's architecture whitepapers: "NVIDIA H100 Tensor Core GPU Architecture" (GH100: 8
# GPCs, 72 TPCs, 2 SMs per TPC), "NVIDIA A100 Tensor Core GPU Architecture" (GA100: 8 GPCs, 8 TPCs per
# GPC, 2 SMs per TPC), "NVIDIA Ampere GA102 GPU Architecture" (GA102: 7 GPCs, 42 TPCs, 84 SMs),
# "NVIDIA Ada GPU Architecture" (AD102: 12 GPCs, 72 TPCs, 144 SMs). The resident warps per SM are the
# CUDA C++ Programming Guide's ("Technical Specifications per Compute Capability"): 64 on 8.0 and 9.0,
# 48 on 8.6 and 8.9. The RM reports the LITTER_* values of the die, whatever a board has fused off.
GR_SHAPES = {"GH100": (8, 9, 2, 64), "GA100": (8, 8, 2, 64), "GA102": (7, 6, 2, 48), "AD102": (12, 6, 2, 48)}


def _identity(name: str, chip: str, architecture: str, device_id: int, vram_gib: int, compute: int,
              copy: int, gpfifo: int, usermode: int) -> GPUIdentity:
    arch_id, implementation = _CHIP_IDS[chip]
    max_channel_va = HOPPER_MAX_CHANNEL_VA if architecture == "hopper" else AMPERE_MAX_CHANNEL_VA
    return GPUIdentity(name, chip, architecture, device_id, vram_gib * GIB,
                       frozenset((*_COMMON, compute, copy, gpfifo, usermode)), compute, copy, gpfifo,
                       usermode, arch_id, implementation, max_channel_va, *GR_SHAPES[chip])


# PCI device ids: the open kernel modules' supported-GPU list (README.md, "Compatible GPUs"): 535.261.03
# lists all but the H200, which the list carries from the 550 branch on (550.163.01: 2335 10DE 18BE)
H100_SXM = _identity("NVIDIA H100 80GB HBM3", "GH100", "hopper", 0x2330, 80, cl.HOPPER_COMPUTE_A,
                     cl.HOPPER_DMA_COPY_A, cl.HOPPER_CHANNEL_GPFIFO_A, cl.HOPPER_USERMODE_A)
H200_SXM = _identity("NVIDIA H200", "GH100", "hopper", 0x2335, 141, cl.HOPPER_COMPUTE_A,
                     cl.HOPPER_DMA_COPY_A, cl.HOPPER_CHANNEL_GPFIFO_A, cl.HOPPER_USERMODE_A)
A100_SXM = _identity("NVIDIA A100-SXM4-80GB", "GA100", "ampere", 0x20B2, 80, cl.AMPERE_COMPUTE_A,
                     cl.AMPERE_DMA_COPY_A, cl.AMPERE_CHANNEL_GPFIFO_A, cl.AMPERE_USERMODE_A)
RTX_3090 = _identity("NVIDIA GeForce RTX 3090", "GA102", "ampere", 0x2204, 24, cl.AMPERE_COMPUTE_B,
                     cl.AMPERE_DMA_COPY_B, cl.AMPERE_CHANNEL_GPFIFO_A, cl.AMPERE_USERMODE_A)
RTX_4090 = _identity("NVIDIA GeForce RTX 4090", "AD102", "ada", 0x2684, 24, cl.ADA_COMPUTE_A,
                     cl.AMPERE_DMA_COPY_B, cl.AMPERE_CHANNEL_GPFIFO_A, cl.AMPERE_USERMODE_A)

GPUS: dict[str, GPUIdentity] = {"h100": H100_SXM, "h200": H200_SXM, "a100": A100_SXM, "rtx3090": RTX_3090,
                                "rtx4090": RTX_4090}
