"""The manifest: every generated target, its pinned source package, the paths inside it and its output.

Adding a target is a few lines in TARGETS: a name, a kind ("structs" for the libclang struct/constant
generator, "amd_regs" for AMD register header pairs), the package it comes from, the header paths
inside that package, and (for "structs") the output module. See docs/autogen.md.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping

from autogen.sources import Package

# kinds of target, each with its generator (see autogen.__main__.generate_target)
KIND_STRUCTS = "structs"
KIND_AMD_REGS = "amd_regs"
KIND_XML_REGS = "xml_regs"  # rules-ng-ng register XML (Mesa freedreno), autogen/xml_regs.py
KIND_ISASPEC = "isaspec"  # Mesa isaspec instruction-set XML (ir3), autogen/ir3_isa.py
KIND_NV_FIELDS = "nv_fields"  # NVIDIA "hi:lo" / MW(hi:lo) field macros, autogen/nv_fields.py

UAPI_LICENCE = "GPL-2.0 WITH Linux-syscall-note"
AMD_LICENCE = "MIT"  # AMD's permission notice, reproduced at the top of each header

# the uapi headers of the same kernel release as LINUX_SOURCE_6_12 (trixie); Debian 12's own
# linux-libc-dev moves with every point release, so it cannot be pinned (docs/autogen.md).
# Both are binary packages of trixie/main: only that suite's Packages index is ever downloaded.
# `python -m autogen --repin TARGET` rewrites a version below when the archive has moved on.
LINUX_LIBC_DEV = Package("linux-libc-dev", "6.12.117-1", UAPI_LICENCE, suite="trixie")
LINUX_SOURCE_6_12 = Package(
    "linux-source-6.12", "6.12.117-1", "GPL-2.0 (the tree); per-file notices apply", suite="trixie",
    layout="tarball", tarball="usr/src/linux-source-6.12.tar.xz",
    members=("drivers/gpu/drm/amd", "drivers/gpu/drm/nouveau/include", "include/uapi"),
)

# the uapi headers include each other through these directories (inside linux-libc-dev)
UAPI_INCLUDE_DIRS = ("usr/include", "usr/include/x86_64-linux-gnu")

# kfd_ioctl.h includes <drm/drm.h>, which Debian ships in libdrm-dev, not linux-libc-dev; it uses
# nothing from it, so an in-memory stand-in that only pulls in the basic types takes its place.
DRM_STUB = {"drm/drm.h": "#include <linux/types.h>\n"}

# Kernel-internal headers use the kernel's own type names and attribute macros; this prelude gives
# them their x86-64 Linux meaning (include/linux/types.h, include/uapi/asm-generic/int-ll64.h,
# include/linux/compiler_attributes.h, include/uapi/linux/stddef.h). amdgpu defines LITTLEENDIAN_CPU
# on little-endian CPUs (display/dc/os_types.h, reached through amdgpu.h); discovery.h needs it.
KERNEL_PRELUDE = """\
typedef unsigned char u8, __u8, uint8_t;
typedef unsigned short u16, __u16, uint16_t, __le16, __be16;
typedef unsigned int u32, __u32, uint32_t, __le32, __be32;
typedef unsigned long long u64, __u64, uint64_t, __le64, __be64;
typedef signed char s8, __s8, int8_t;
typedef short s16, __s16, int16_t;
typedef int s32, __s32, int32_t;
typedef long long s64, __s64, int64_t;
typedef unsigned long size_t, uintptr_t;
typedef long ssize_t, intptr_t;
typedef _Bool bool;
enum { false = 0, true = 1 };
#define __packed __attribute__((packed))
#define DECLARE_FLEX_ARRAY(TYPE, NAME) struct { struct { } __empty_##NAME; TYPE NAME[]; }
#define LITTLEENDIAN_CPU 1
"""

# amdgpu_ucode.h also declares driver state and functions: a printf-format attribute macro and an
# opaque stand-in for the kernel's struct mutex let it parse; the one struct holding the stand-in is
# left out (its layout would not be the kernel's).
UCODE_PRELUDE = KERNEL_PRELUDE + """\
#define __printf(format_index, first_argument) __attribute__((format(printf, format_index, first_argument)))
struct mutex { int opaque_stand_in; };
"""
UCODE_EXCLUDE = {"amdgpu_firmware": "driver state holding a kernel struct mutex (a stand-in here); "
                                    "not a firmware format"}

AMD_DIR = "drivers/gpu/drm/amd"

# NVIDIA's open GPU kernel modules, branch r535, as Debian 12 (bookworm/contrib) builds them. The binary
# package nvidia-open-kernel-source carries only kernel-open/ (no RM API headers: nvos.h, the class
# and control headers, nv_escape.h), so the Debian source package is pinned instead: only its upstream
# tarball (12.5 MB) is fetched, checked against the sha256 of bookworm's Sources index.
# trixie carries 550.163.01-2 (docs/nv.md: why r550 has no target yet).
NVIDIA_OPEN_535 = Package(
    "nvidia-open-gpu-kernel-modules", "535.261.03-1", "MIT", suite="bookworm", component="contrib",
    layout="source", orig_sha256="14f64f53694d4a580ea68a561db02c2a8847790087a86f50fd2f40eac3eebb8f",
    top="NVIDIA-kernel-module-source-535.261.03",
    members=("src/common/sdk/nvidia/inc", "src/nvidia/arch/nvalloc/unix/include", "kernel-open/common/inc",
             "kernel-open/nvidia-uvm"),
)
NV_SDK = "src/common/sdk/nvidia/inc"
NV_UNIX = "src/nvidia/arch/nvalloc/unix/include"
NV_KERNEL_INC = "kernel-open/common/inc"
NV_UVM = "kernel-open/nvidia-uvm"
NV_INCLUDE_DIRS = (NV_SDK, NV_UNIX, NV_KERNEL_INC, NV_UVM)
# the RM headers need only the C basics; NV_ALIGN_BYTES etc. come from nvtypes.h itself
NV_PRELUDE = """\
typedef unsigned long size_t, uintptr_t;
typedef long ssize_t, intptr_t;
"""
NV_CLASSES = ("cl0000", "cl0005", "cl9067", "cl003e", "cl0040", "cl0070", "cl0071", "cl0080", "cl00b1",
              "cl00fd", "cl2080", "cl90f1", "cla06c", "clc361", "clc461", "clc561", "clc661", "clc56f",
              "clc86f", "clc6c0", "clc7c0", "clc9c0", "clcbc0", "clc6b5", "clc7b5", "clc8b5")
NV_CONTROLS = ("ctrl0000/ctrl0000client.h", "ctrl0000/ctrl0000gpu.h", "ctrl0000/ctrl0000system.h",
               "ctrl0080/ctrl0080gpu.h", "ctrl0080/ctrl0080fifo.h", "ctrl2080/ctrl2080gpu.h",
               "ctrl2080/ctrl2080fb.h", "ctrl2080/ctrl2080gr.h", "ctrl2080/ctrl2080mc.h",
               "ctrla06c.h", "ctrlc36f.h", "ctrl90f1.h")

# Mesa as Debian 13 (trixie/main) builds it: the source package's upstream tarball (46.8 MB, sha256
# as trixie's Sources index and the .dsc give it). Unpacked: Adreno's register database and ir3 ISA
# XML (read by autogen/xml_regs.py and autogen/ir3_isa.py), the isaspec format description they
# follow, the KGSL uapi header turnip carries, and nouveau's NVIDIA class headers (QMD layouts).
# Mesa's ir3 disassembler test: instruction words with the text its disassembler prints, per GPU
# (read by tests/qcom/test_ir3_isa.py, not by a generator)
MESA_IR3_TEST_VECTORS = "src/freedreno/ir3/tests/disasm.c"
MESA_25_0 = Package(
    "mesa", "25.0.7-2+deb13u1", "MIT (per-file notices apply)", suite="trixie",
    layout="source", orig_sha256="592272df3cf01e85e7db300c449df5061092574d099da275d19e97ef0510f8a6",
    top="mesa-25.0.7",
    members=("src/freedreno/registers", "src/freedreno/isa", "src/compiler/isaspec",
             "src/freedreno/vulkan/msm_kgsl.h", "src/nouveau/headers/nvidia/classes",
             MESA_IR3_TEST_VECTORS),
)
MESA_FREEDRENO_REGS = "src/freedreno/registers/adreno"
# Hopper's QMD (04_00): no Debian package reachable here carries clcbc0qmd.h (Mesa 25.0.7 stops at
# Ada; newer mesa source packages are listed but their files are not served), so it is pinned to a
# commit of NVIDIA's own documentation repository (MIT, LICENSE.md there). The file is placed in the
# cache by hand (sources.py, layout "git") and checked against this sha256; it is never committed.
OPEN_GPU_DOC_QMD = "classes/compute/clcbc0qmd.h"
OPEN_GPU_DOC = Package(
    "open-gpu-doc", "c8607fe576b53ff821ffcf97e7548d2de11c4eaf", "MIT", layout="git",
    repository="NVIDIA/open-gpu-doc",
    file_sha256=((OPEN_GPU_DOC_QMD, "ff8d1dc4a5e6b37914e5e6ed5e3d728bc003dfb7e12202feb08ba71c27074d38"),),
)
# msm_kgsl.h includes <linux/types.h> and <linux/ioctl.h>, which the Mesa tree does not ship: these
# stand-ins give the x86-64/arm64 LP64 types and the generic ioctl number layout
# (include/uapi/asm-generic/ioctl.h: nr bits 0-7, type 8-15, size 16-29, direction 30-31 with
# write = 1, read = 2); mesa keeps the kernel's `__user` annotation, which means nothing here.
KGSL_STUBS = {
    "linux/types.h": KERNEL_PRELUDE + "typedef unsigned long __kernel_size_t;\n",
    "linux/ioctl.h": """\
#define _IOC(dir, type, nr, size) (((dir) << 30) | ((size) << 16) | ((type) << 8) | (nr))
#define _IO(type, nr) _IOC(0U, (type), (nr), 0)
#define _IOW(type, nr, argtype) _IOC(1U, (type), (nr), sizeof(argtype))
#define _IOR(type, nr, argtype) _IOC(2U, (type), (nr), sizeof(argtype))
#define _IOWR(type, nr, argtype) _IOC(3U, (type), (nr), sizeof(argtype))
""",
}
KGSL_PRELUDE = "#define __user\n"


@dataclasses.dataclass(frozen=True)
class Target:
    """One generated target. `package`, `version` and `licence` come from its pinned source package."""

    name: str
    kind: str
    source: Package
    paths: tuple[str, ...]
    description: str
    output: str = ""  # repository-relative module path ("structs"); "amd_regs" names its own outputs
    include_dirs: tuple[str, ...] = ()  # inside the package
    prelude: str = ""
    stubs: Mapping[str, str] = dataclasses.field(default_factory=dict)
    exclude: Mapping[str, str] = dataclasses.field(default_factory=dict)  # name -> why it is left out
    licence_override: str = ""
    # "xml_regs" only: the chip variant kept, further paths whose enums and domains are emitted too,
    # and register name prefixes per domain (default "<domain>_")
    variant: str = ""
    also_emit: tuple[str, ...] = ()
    domain_prefixes: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @property
    def package(self) -> str:
        return self.source.name

    @property
    def version(self) -> str:
        return self.source.version

    @property
    def licence(self) -> str:
        return self.licence_override or self.source.licence


def _uapi(name: str, header: str, description: str, **extra) -> Target:
    return Target(f"linux.{name}", KIND_STRUCTS, LINUX_LIBC_DEV, (f"usr/include/linux/{header}",),
                  description, output=f"autogen/linux/{name}.py", include_dirs=UAPI_INCLUDE_DIRS, **extra)


def _amd(name: str, path: str, description: str, prelude: str = KERNEL_PRELUDE, **extra) -> Target:
    return Target(f"amd.{name}", KIND_STRUCTS, LINUX_SOURCE_6_12, (f"{AMD_DIR}/{path}",), description,
                  output=f"autogen/amd/{name}.py", prelude=prelude, licence_override=AMD_LICENCE, **extra)


def _nv535(name: str, paths: tuple[str, ...], description: str, **extra) -> Target:
    return Target(f"nv.r535.{name}", KIND_STRUCTS, NVIDIA_OPEN_535, paths, description,
                  output=f"autogen/nv/r535/{name}.py", include_dirs=NV_INCLUDE_DIRS, prelude=NV_PRELUDE,
                  **extra)


def _amd_regs(ip: str, folder: str) -> Target:
    base = f"{AMD_DIR}/include/asic_reg/{folder}/{ip}"
    return Target(f"amd.regs.{ip}", KIND_AMD_REGS, LINUX_SOURCE_6_12,
                  (f"{base}_offset.h", f"{base}_sh_mask.h"), f"AMD {ip} registers",
                  licence_override=AMD_LICENCE)


TARGETS: tuple[Target, ...] = (
    _uapi("vfio", "vfio.h", "Linux VFIO uapi (linux/vfio.h): ioctl numbers, flags and argument structs."),
    _uapi("pci_regs", "pci_regs.h",
          "PCI configuration-space registers and capabilities (linux/pci_regs.h)."),
    _uapi("kfd_ioctl", "kfd_ioctl.h", "AMD KFD compute uapi (linux/kfd_ioctl.h): ioctls and their structs.",
          stubs=DRM_STUB),
    _amd("discovery", "include/discovery.h", "AMD IP discovery table layout (discovery.h)."),
    _amd("soc15_hw_ip", "include/soc15_hw_ip.h",
         "AMD hardware IP ids that the IP discovery table names blocks by (soc15_hw_ip.h)."),
    _amd("amdgpu_ucode", "amdgpu/amdgpu_ucode.h", "AMD firmware image headers (amdgpu_ucode.h).",
         prelude=UCODE_PRELUDE, exclude=UCODE_EXCLUDE),
    _amd("psp_gfx_if", "amdgpu/psp_gfx_if.h",
         "AMD PSP GFX interface: commands and ring frames (psp_gfx_if.h)."),
    _amd("v11_structs", "include/v11_structs.h",
         "AMD gfx11 MQD and SDMA queue descriptors (v11_structs.h)."),
    _amd("nvd", "amdgpu/nvd.h", "AMD PM4 packets for gfx10/gfx11 (nvd.h)."),
    _amd("navi10_enum", "include/navi10_enum.h",
         "AMD gfx10/gfx11 hardware enums: event types, formats (navi10_enum.h)."),
    _amd("sdma_v6_0_0_pkt_open", "amdgpu/sdma_v6_0_0_pkt_open.h",
         "AMD SDMA 6.0 packets (sdma_v6_0_0_pkt_open.h)."),
    _amd("irqsrcs_gfx_11_0_0", "include/ivsrcid/gfx/irqsrcs_gfx_11_0_0.h",
         "AMD GC 11.0 interrupt source ids (irqsrcs_gfx_11_0_0.h)."),
    _amd("soc15_ih_clientid", "include/soc15_ih_clientid.h",
         "AMD interrupt handler client ids (soc15_ih_clientid.h)."),
    _amd("irqsrcs_vmc_1_0", "include/ivsrcid/vmc/irqsrcs_vmc_1_0.h",
         "AMD VM fault interrupt source ids of the hubs (irqsrcs_vmc_1_0.h)."),
    _amd("smu_v13_0_0_ppsmc", "pm/swsmu/inc/pmfw_if/smu_v13_0_0_ppsmc.h",
         "AMD SMU 13.0.0 firmware messages (smu_v13_0_0_ppsmc.h)."),
    _amd("smu13_driver_if_v13_0_0", "pm/swsmu/inc/pmfw_if/smu13_driver_if_v13_0_0.h",
         "AMD SMU 13.0.0 driver interface tables (smu13_driver_if_v13_0_0.h)."),
    _amd_regs("gc_11_0_0", "gc"),  # GC 11.0.0, including the SDMA 6.0 registers
    _amd_regs("mmhub_3_0_0", "mmhub"),
    _amd_regs("nbio_4_3_0", "nbio"),
    _amd_regs("mp_13_0_0", "mp"),  # MP0 (PSP) and MP1 (SMU) 13.0.0 share one header pair
    _amd_regs("osssys_6_0_0", "oss"),
    _amd_regs("hdp_6_0_0", "hdp"),
    _nv535("escape", (f"{NV_KERNEL_INC}/nv-ioctl-numbers.h", f"{NV_KERNEL_INC}/nv-ioctl.h",
                      f"{NV_UNIX}/nv_escape.h"),
           "NVIDIA r535 OS and RM escapes on /dev/nvidiactl and /dev/nvidiaN: numbers, OS-escape structs."),
    _nv535("nvos", (f"{NV_SDK}/nvos.h", f"{NV_UNIX}/nv-unix-nvos-params-wrappers.h"),
           "NVIDIA r535 RM API parameters (nvos.h): alloc, control, free, map memory, memory flags."),
    _nv535("status", (f"{NV_SDK}/nvstatus.h",),
           "NVIDIA r535 NV_STATUS codes (nvstatus.h, nvstatuscodes.h)."),
    _nv535("classes", (*(f"{NV_SDK}/class/{name}.h" for name in NV_CLASSES),
                       f"{NV_SDK}/class/cl2080_notification.h", f"{NV_SDK}/alloc/alloc_channel.h"),
           "NVIDIA r535 RM classes: numbers and allocation parameters (class/cl*.h, alloc_channel.h)."),
    _nv535("ctrl", tuple(f"{NV_SDK}/ctrl/{path}" for path in NV_CONTROLS),
           "NVIDIA r535 RM control commands and parameters (ctrl/ctrl*.h)."),
    # UVM's own copy of ctrl2080mc.h is the one with the Ada and Hopper architecture ids
    _nv535("uvm", (f"{NV_UVM}/uvm_types.h", f"{NV_UVM}/uvm_linux_ioctl.h", f"{NV_UVM}/uvm_ioctl.h",
                   f"{NV_UVM}/ctrl2080mc.h"),
           "NVIDIA r535 UVM ioctls on /dev/nvidia-uvm (uvm_types.h, uvm_ioctl.h, uvm_linux_ioctl.h) and the "
           "architecture ids UVM uses (its ctrl2080mc.h)."),
    Target("qcom.kgsl", KIND_STRUCTS, MESA_25_0, ("src/freedreno/vulkan/msm_kgsl.h",),
           "Qualcomm KGSL uapi (msm_kgsl.h as Mesa's turnip carries it): ioctls, structs, property "
           "ids, memory, context and command flags.", output="autogen/qcom/kgsl.py",
           prelude=KGSL_PRELUDE, stubs=KGSL_STUBS, licence_override=UAPI_LICENCE),
    Target("qcom.a6xx", KIND_XML_REGS, MESA_25_0,
           (f"{MESA_FREEDRENO_REGS}/a6xx.xml", f"{MESA_FREEDRENO_REGS}/adreno_common.xml",
            f"{MESA_FREEDRENO_REGS}/adreno_pm4.xml", "src/freedreno/registers/freedreno_copyright.xml"),
           "Adreno 6xx registers (a6xx.xml, variant A6XX): offsets in dwords, fields, enums.",
           output="autogen/qcom/a6xx.py", variant="A6XX", domain_prefixes={"A6XX": "REG_A6XX_"},
           licence_override="MIT"),
    Target("qcom.pm4", KIND_XML_REGS, MESA_25_0,
           (f"{MESA_FREEDRENO_REGS}/adreno_pm4.xml", f"{MESA_FREEDRENO_REGS}/adreno_common.xml",
            "src/freedreno/registers/freedreno_copyright.xml"),
           "Adreno CP packets (adreno_pm4.xml, variant A6XX): type-7 opcodes, packet payload dwords "
           "and fields, event ids; adreno_common.xml's enums and registers.",
           output="autogen/qcom/pm4.py", variant="A6XX",
           also_emit=(f"{MESA_FREEDRENO_REGS}/adreno_common.xml",), licence_override="MIT"),
    Target("qcom.ir3_isa", KIND_ISASPEC, MESA_25_0,
           tuple(f"src/freedreno/isa/{name}.xml" for name in (
               "ir3", "ir3-common", "ir3-cat0", "ir3-cat1", "ir3-cat2", "ir3-cat3", "ir3-cat4",
               "ir3-cat5", "ir3-cat6", "ir3-cat7")),
           "Adreno ir3 shader instruction set for A6XX (isaspec XML): bitsets with patterns, fields, "
           "display templates, expressions, enums.", output="autogen/qcom/ir3_isa.py",
           variant="A6XX", licence_override="MIT"),
    # the method fields of the host, compute, copy and usermode classes ("hi:lo", which clang_gen skips)
    Target("nv.r535.fields", KIND_NV_FIELDS, NVIDIA_OPEN_535,
           tuple(f"{NV_SDK}/class/{name}.h" for name in ("clc56f", "clc86f", "clc6c0", "clc6b5", "clc361")),
           "NVIDIA r535 method and GP-entry fields of the GPFIFO host (clc56f.h, clc86f.h), compute "
           "(clc6c0.h), copy (clc6b5.h) and usermode (clc361.h) classes: bit ranges and values.",
           output="autogen/nv/r535/fields.py",
           domain_prefixes={"NVC56F_": "", "NVC86F_": "", "NVC6C0_": "", "NVC6B5_": "", "NVC361_": ""}),
    # QMD 03_00 (Ampere and Ada compute) from nouveau's copy of NVIDIA's class headers
    Target("nv.qmd", KIND_NV_FIELDS, MESA_25_0,
           ("src/nouveau/headers/nvidia/classes/clc6c0qmd.h",
            "src/nouveau/headers/nvidia/classes/clc7c0qmd.h"),
           "NVIDIA QMD 03_00 (AMPERE_COMPUTE_A clc6c0qmd.h, AMPERE_COMPUTE_B clc7c0qmd.h): the launch "
           "descriptor's fields as bit ranges of the 256-byte QMD, and their values.",
           output="autogen/nv/qmd.py", licence_override="MIT",
           domain_prefixes={"NVC6C0_QMDV03_00_": "", "NVC7C0_QMDV03_00_": ""}),
    # QMD 04_00 (Hopper compute) from NVIDIA's clcbc0qmd.h at a pinned open-gpu-doc commit
    Target("nv.qmd_v04", KIND_NV_FIELDS, OPEN_GPU_DOC, (OPEN_GPU_DOC_QMD,),
           "NVIDIA QMD 04_00 (HOPPER_COMPUTE_A clcbc0qmd.h, NVCBC0_QMDV04_00_*): the launch descriptor's "
           "fields as bit ranges of the 384-byte QMD, and their values.",
           output="autogen/nv/qmd_v04.py", domain_prefixes={"NVCBC0_QMDV04_00_": ""}),
)

BY_NAME: dict[str, Target] = {target.name: target for target in TARGETS}


class UnknownTarget(KeyError):
    """A target name (or group prefix) that matches nothing in the manifest."""

    def __str__(self) -> str:
        return self.args[0]


def select(names: list[str] | tuple[str, ...]) -> list[Target]:
    """Targets by exact name or by group prefix ("linux", "amd", "amd.regs"); all when `names` is empty."""
    if not names:
        return list(TARGETS)
    chosen: list[Target] = []
    for name in names:
        matches = [t for t in TARGETS if t.name == name or t.name.startswith(name.rstrip(".") + ".")]
        if not matches:
            known = "\n  ".join(t.name for t in TARGETS)
            raise UnknownTarget(f"unknown target {name!r}; known targets:\n  {known}")
        chosen.extend(t for t in matches if t not in chosen)
    return chosen
