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
# trixie carries 550.163.01-2, whose source package is not served here: r550 and the newer branches are
# pinned to NVIDIA's repository below.
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

# The headers every branch's RM and UVM targets read (the same paths in every branch), by module:
# (paths inside the source tree, what the module holds). UVM's own copy of ctrl2080mc.h is the one with
# the Ada and Hopper architecture ids.
NV_SET_FILES: dict[str, tuple[tuple[str, ...], str]] = {
    "escape": ((f"{NV_KERNEL_INC}/nv-ioctl-numbers.h", f"{NV_KERNEL_INC}/nv-ioctl.h",
                f"{NV_UNIX}/nv_escape.h"),
               "OS and RM escapes on /dev/nvidiactl and /dev/nvidiaN: numbers, OS-escape structs."),
    "nvos": ((f"{NV_SDK}/nvos.h", f"{NV_UNIX}/nv-unix-nvos-params-wrappers.h"),
             "RM API parameters (nvos.h): alloc, control, free, map memory, memory flags."),
    "status": ((f"{NV_SDK}/nvstatus.h",), "NV_STATUS codes (nvstatus.h, nvstatuscodes.h)."),
    "classes": ((*(f"{NV_SDK}/class/{name}.h" for name in NV_CLASSES),
                 f"{NV_SDK}/class/cl2080_notification.h", f"{NV_SDK}/alloc/alloc_channel.h"),
                "RM classes: numbers and allocation parameters (class/cl*.h, alloc_channel.h)."),
    "ctrl": (tuple(f"{NV_SDK}/ctrl/{path}" for path in NV_CONTROLS),
             "RM control commands and parameters (ctrl/ctrl*.h)."),
    "uvm": ((f"{NV_UVM}/uvm_types.h", f"{NV_UVM}/uvm_linux_ioctl.h", f"{NV_UVM}/uvm_ioctl.h",
             f"{NV_UVM}/ctrl2080mc.h"),
            "UVM ioctls on /dev/nvidia-uvm (uvm_types.h, uvm_ioctl.h, uvm_linux_ioctl.h) and the "
            "architecture ids UVM uses (its ctrl2080mc.h)."),
}
# From 590.44.01 nv-ioctl.h includes nv-ioctl-numa.h, which includes <stdint.h> outside the kernel
# (git diff 580.142 590.48.01 -- kernel-open/common/inc/nv-ioctl.h): the escape targets of those branches
# parse with this stand-in, x86-64 glibc's exact-width types (LP64: 64-bit types are long).
NV_STDINT_BRANCHES = ("590", "595")
NV_STDINT_STUB = {"stdint.h": """\
/* x86-64 glibc <stdint.h>: exact-width integer types */
typedef signed char int8_t;
typedef short int16_t;
typedef int int32_t;
typedef long int64_t;
typedef unsigned char uint8_t;
typedef unsigned short uint16_t;
typedef unsigned int uint32_t;
typedef unsigned long uint64_t;
"""}
# From 580.65.06 UVM's user-visible enums (UvmGpuMappingType, which UVM_MAP_EXTERNAL_ALLOCATION's
# gpuMappingType takes) live in nv_uvm_user_types.h, which uvm_types.h includes (git diff 575.64.05
# 580.142 -- kernel-open/nvidia-uvm/uvm_types.h): the uvm target of those branches reads it too.
NV_UVM_USER_TYPES = f"{NV_KERNEL_INC}/nv_uvm_user_types.h"
NV_UVM_USER_TYPES_BRANCHES = ("580", "590", "595")
# the method-field target's headers (host, compute, copy and usermode classes)
NV_FIELD_CLASSES = ("clc56f", "clc86f", "clc6c0", "clc6b5", "clc361")


def _nv_include_name(path: str) -> str:
    """The name a header is included by: its path below its include directory ("class/cl0000.h")."""
    return next(path[len(folder) + 1:] for folder in NV_INCLUDE_DIRS if path.startswith(folder + "/"))


def _nv_set_files(branch: str) -> dict[str, tuple[tuple[str, ...], str]]:
    """NV_SET_FILES as `branch` needs them (headers that moved between branches)."""
    files = dict(NV_SET_FILES)
    if branch in NV_UVM_USER_TYPES_BRANCHES:
        paths, what = files["uvm"]
        files["uvm"] = ((*paths, NV_UVM_USER_TYPES), what)
    return files


def nv_pinned_files(branch: str) -> tuple[str, ...]:
    """Every file the RM/UVM targets of `branch` read (a git pin gives each one's sha256)."""
    return tuple(dict.fromkeys(path for paths, _ in _nv_set_files(branch).values() for path in paths))


def _nv_git(branch: str, commit: str, sha256_by_header: Mapping[str, str]) -> Package:
    """Branch `branch` of NVIDIA/open-gpu-kernel-modules pinned at `commit`: the sha256 of every one
    of nv_pinned_files(branch), each named by the path it is included by (`_nv_include_name`)."""
    pinned = nv_pinned_files(branch)
    names = {_nv_include_name(path): path for path in pinned}
    if len(names) != len(pinned) or set(sha256_by_header) != set(names):
        raise ValueError(f"pin of {commit}: headers {sorted(set(names) ^ set(sha256_by_header))} "
                         f"missing or unknown")
    return Package("open-gpu-kernel-modules", commit, "MIT", layout="git",
                   repository="NVIDIA/open-gpu-kernel-modules",
                   file_sha256=tuple((path, sha256_by_header[name]) for name, path in names.items()))


# Branches r550 to r595 (a machine with an H200 and the CUDA 13 toolkit runs 580 or newer; Debian 13
# runs 550): NVIDIA's open-gpu-kernel-modules repository at the commit of each branch's newest tag
# there. The same header paths as r535, placed in the cache by hand (sources.py, layout "git"; the four
# member folders, so that their includes resolve) and checked against these sha256; never committed.
# 570.211.01 was the first branch pinned this way (docs/nv.md: what changed from r535)
NVIDIA_OPEN_570_TAG = "570.211.01"
NVIDIA_OPEN_570 = _nv_git("570", "498793d5e2a86c981b83c1bfb31f1f4a082d0f7b", {
    "nv-ioctl-numbers.h": "7f449a019521f2f858a2d485eed1ee0fa4a8ffc82c9aecd484be5d3f6821f87d",
    "nv-ioctl.h": "5b3838e454ae4ded4d2cd120622681ba56bf296c3701a4f1b832b6b9e3b534df",
    "nv_escape.h": "12850ee7368dbfeba1e2392f9ff7fb44563d88ed12cbf478d0c0f61a03763570",
    "nvos.h": "a0dc58498fda0d9a02d302899efd24d3c5794565ee1b6b04a11f240bb01a5a1d",
    "nv-unix-nvos-params-wrappers.h": "d3ff263781baae28ade28d5fd7a9f69d2019e8f4ca7bfb5675fa280be77792e5",
    "nvstatus.h": "e8267172a1f7a56420d612c6734b3554b9ff6a3d33fdda21b1371ff4ce4b8675",
    "class/cl0000.h": "2f8c158b1e0d55fb425497054539e9dcb24002ec5e4949dd56b9b2b8e17d0208",
    "class/cl0005.h": "4946d20304410bd72d97cb2bcc649a225b0eccc5aafa6dc9ac975d6180865ebd",
    "class/cl9067.h": "d2266b0ba4b84897c4c3d1b0f5047c72a9d5247c61c5bf0bfcbb7812e0b53654",
    "class/cl003e.h": "4870b6c5592fe481075143a0724d5767fb745ae5a04a15fc62fc2246dfba6c47",
    "class/cl0040.h": "8e6fef4c77c91a352b862767d7292951fe44f5a4b2271fa5bbc7b03b3c7bd414",
    "class/cl0070.h": "6617fb96ec110b5d3cad0ecff9f1aac20fa824eb3134b3fefe5615e35c1ea01f",
    "class/cl0071.h": "eb25c028642197fafa6c5c51dfceb081363dec65d50331d05de4d0140ee9e0eb",
    "class/cl0080.h": "8829ae3793aaad80dc8e9b560882d4e900565de7ce7832c0ea0ceffe7fe12b08",
    "class/cl00b1.h": "8d5912a50293e9cf54450bfa898f53b16b6b45d501ed89462f5857bddf2a3862",
    "class/cl00fd.h": "ea0f1405ffcb230ffa34f3e1bfd364781b6a62ce7eb2add67b389aa08cba700a",
    "class/cl2080.h": "6f0c32970e6ba7e56dec28c44594b41570237bf74b1ea33ab5e8bcd139805351",
    "class/cl90f1.h": "c1bd28c0a38f74b3e92c6a0b52b2e76bd6782ca6b112593dc69eda88913600b9",
    "class/cla06c.h": "30846382b0e34e930ce16d4ea9f31245b561509171a7df1bf1c0560a7b101053",
    "class/clc361.h": "65c33030f555713c63d3e8aba43f09738c46823bab141a9a07145ca22dc9f06b",
    "class/clc461.h": "b0bc3bad11a680f3a61b3cd98a3f84f46ffb164ff308351951dd807f1a5db047",
    "class/clc561.h": "a755fbb2c34063ca9a3bb707d5bf2481e92e28a0d3bdc7430937f5ee3dba8d43",
    "class/clc661.h": "6e9ff50400d4175448ed7348524eb2634f8536680b594989b9b08757df590393",
    "class/clc56f.h": "8b7a6d6d5d5e3538f2f3e3b975d00c4aa94bd2480008c49aefcfc2566e3f658e",
    "class/clc86f.h": "e80fb75a988bf99b6998e6436c701478764eadd30152d0a8f819c591af4cb849",
    "class/clc6c0.h": "2e8352bf73e395b827282af96535778bf43832186870ed2306a7db818d38da42",
    "class/clc7c0.h": "4cc2a76fd66d9124b962adaa68ceadcf8928a2589f0e195dd1d73db260234d0c",
    "class/clc9c0.h": "abdfdcfdd2dd5e0a9c823cde3894beceebba79322dc0bbc0a82c15da81e1804a",
    "class/clcbc0.h": "0e969c1329b339ee4551cf12095aa4aed9084c7d0095444eea34fcf80214d365",
    "class/clc6b5.h": "38caaf7efa2c9a58849ebf688c042eb43a4e6b1c670155df412e1e82ea580b71",
    "class/clc7b5.h": "9e8dbda2d6741abeb2d2c81bb92cb621445aac7facf8c8113f3cb3d12f1c7660",
    "class/clc8b5.h": "d915f6fe0ed27c6a66a7be92fd14ebddd2853ff03b653f233b8b4c76d0bd7f2b",
    "class/cl2080_notification.h": "d8ca340a170461423cf8f969dd8c3ee5cb2c599d311b78bab3ce5c0abe96c3cf",
    "alloc/alloc_channel.h": "f0211fbc8bf3f80841f699bf4ccb776d32517308782dfb3c8e99c7652986b5ab",
    "ctrl/ctrl0000/ctrl0000client.h": "3df9e7a953a2e766423119514a032e1069a1c9ee766c43a048b2b98c95b311e4",
    "ctrl/ctrl0000/ctrl0000gpu.h": "15ed060d451c0b7d95153b0c1133a51b959a00c1b4441c47dfa4a89459e3ea2b",
    "ctrl/ctrl0000/ctrl0000system.h": "99e477db7db5b9527960149f11681c62819c1fd60fb4f3fc5363b8e5ef78132f",
    "ctrl/ctrl0080/ctrl0080gpu.h": "e7830130949ae2d972bb56a55289e098c29e54322d04dae494fcde9bcca5ce31",
    "ctrl/ctrl0080/ctrl0080fifo.h": "8c2b460e55ea2bd597393bb5662160361c004a98e0e8eed3f1278071eb60d701",
    "ctrl/ctrl2080/ctrl2080gpu.h": "10b0d06c3c30ecee747406a45495b2742fbfbdd9e59e2624ef1017149a9e8535",
    "ctrl/ctrl2080/ctrl2080fb.h": "2287392595b9bc697999a79f33fa9169c92e3d1796105f6a8358cea397489b44",
    "ctrl/ctrl2080/ctrl2080gr.h": "d2a8f921cf3ad987ffb2af3b35b88b17620cfb0e9bece47715978ea0f1a692ec",
    "ctrl/ctrl2080/ctrl2080mc.h": "bd0f8273076c3dbc75275ba9c596d87aad9ee4a9f63bf35f74eb84f34ec7fd7b",
    "ctrl/ctrla06c.h": "4b27624d4d9c21d884e1b56418493a5aecad60748be2611eadaf36663adc7c1d",
    "ctrl/ctrlc36f.h": "c67efacd419f3ac55ae2a94c2c8b611e9973ef300dd6e1bd762d0dcc7992b896",
    "ctrl/ctrl90f1.h": "ed30642e8648456affe5923c9c6284d7c61964b56bab67ccb0d7f4dc595967a9",
    "uvm_types.h": "9dca5caf658e3220e071a28d18a5df2efe3e127c0bc6d65e74ada5586b234e3a",
    "uvm_linux_ioctl.h": "0ffb5cf3679fb5e150745e54b72fab861e319823e419f36376468a60862c2748",
    "uvm_ioctl.h": "ccf361c8a7f375f963ba11efa3e70dd14dc3451c9cf542a23fd931f37a18f181",
    "ctrl2080mc.h": "6f587cb59870e501eecae754d01aec77e9b98a433b5ba5aced0508957ac7d34f",
})
# 550.163.01: the upstream release Debian 13 (trixie) packages as 550.163.01-2, whose source package
# is not served by the archive mirror this project is built against
NVIDIA_OPEN_550_TAG = "550.163.01"
NVIDIA_OPEN_550 = _nv_git("550", "23e9e7621487fe632040a370249f690a456967dd", {
    "nv-ioctl-numbers.h": "7f449a019521f2f858a2d485eed1ee0fa4a8ffc82c9aecd484be5d3f6821f87d",
    "nv-ioctl.h": "2954dea7a3f990741d6b595ca78e51f792be3d6011666756defabfea8ca45c11",
    "nv_escape.h": "12850ee7368dbfeba1e2392f9ff7fb44563d88ed12cbf478d0c0f61a03763570",
    "nvos.h": "9c61543399859e3f759b27c0421c27cd124200b8f2044b97e414b125a0410874",
    "nv-unix-nvos-params-wrappers.h": "d3ff263781baae28ade28d5fd7a9f69d2019e8f4ca7bfb5675fa280be77792e5",
    "nvstatus.h": "e8267172a1f7a56420d612c6734b3554b9ff6a3d33fdda21b1371ff4ce4b8675",
    "class/cl0000.h": "c21921d9a50625d3d15bbe407b6ea1444d9f83b7b47e8f8b0b07209ba80e227e",
    "class/cl0005.h": "4946d20304410bd72d97cb2bcc649a225b0eccc5aafa6dc9ac975d6180865ebd",
    "class/cl9067.h": "d2266b0ba4b84897c4c3d1b0f5047c72a9d5247c61c5bf0bfcbb7812e0b53654",
    "class/cl003e.h": "4870b6c5592fe481075143a0724d5767fb745ae5a04a15fc62fc2246dfba6c47",
    "class/cl0040.h": "8e6fef4c77c91a352b862767d7292951fe44f5a4b2271fa5bbc7b03b3c7bd414",
    "class/cl0070.h": "6617fb96ec110b5d3cad0ecff9f1aac20fa824eb3134b3fefe5615e35c1ea01f",
    "class/cl0071.h": "eb25c028642197fafa6c5c51dfceb081363dec65d50331d05de4d0140ee9e0eb",
    "class/cl0080.h": "8829ae3793aaad80dc8e9b560882d4e900565de7ce7832c0ea0ceffe7fe12b08",
    "class/cl00b1.h": "8d5912a50293e9cf54450bfa898f53b16b6b45d501ed89462f5857bddf2a3862",
    "class/cl00fd.h": "ea0f1405ffcb230ffa34f3e1bfd364781b6a62ce7eb2add67b389aa08cba700a",
    "class/cl2080.h": "6f0c32970e6ba7e56dec28c44594b41570237bf74b1ea33ab5e8bcd139805351",
    "class/cl90f1.h": "c1bd28c0a38f74b3e92c6a0b52b2e76bd6782ca6b112593dc69eda88913600b9",
    "class/cla06c.h": "30846382b0e34e930ce16d4ea9f31245b561509171a7df1bf1c0560a7b101053",
    "class/clc361.h": "65c33030f555713c63d3e8aba43f09738c46823bab141a9a07145ca22dc9f06b",
    "class/clc461.h": "b0bc3bad11a680f3a61b3cd98a3f84f46ffb164ff308351951dd807f1a5db047",
    "class/clc561.h": "a755fbb2c34063ca9a3bb707d5bf2481e92e28a0d3bdc7430937f5ee3dba8d43",
    "class/clc661.h": "6e9ff50400d4175448ed7348524eb2634f8536680b594989b9b08757df590393",
    "class/clc56f.h": "8b7a6d6d5d5e3538f2f3e3b975d00c4aa94bd2480008c49aefcfc2566e3f658e",
    "class/clc86f.h": "21a7e000b957df750b5a5f8df8158ad51eb5469c66c394531acd754908146f98",
    "class/clc6c0.h": "2e8352bf73e395b827282af96535778bf43832186870ed2306a7db818d38da42",
    "class/clc7c0.h": "4cc2a76fd66d9124b962adaa68ceadcf8928a2589f0e195dd1d73db260234d0c",
    "class/clc9c0.h": "abdfdcfdd2dd5e0a9c823cde3894beceebba79322dc0bbc0a82c15da81e1804a",
    "class/clcbc0.h": "0e969c1329b339ee4551cf12095aa4aed9084c7d0095444eea34fcf80214d365",
    "class/clc6b5.h": "38caaf7efa2c9a58849ebf688c042eb43a4e6b1c670155df412e1e82ea580b71",
    "class/clc7b5.h": "9e8dbda2d6741abeb2d2c81bb92cb621445aac7facf8c8113f3cb3d12f1c7660",
    "class/clc8b5.h": "d915f6fe0ed27c6a66a7be92fd14ebddd2853ff03b653f233b8b4c76d0bd7f2b",
    "class/cl2080_notification.h": "b3985f017aa808e86d07b8548b7e7a43a939de4822e1cfded12d214ad3f4630b",
    "alloc/alloc_channel.h": "b18ff694d94f599167b8328556a4d14fafe6699710709c528ab02259d03e811d",
    "ctrl/ctrl0000/ctrl0000client.h": "3df9e7a953a2e766423119514a032e1069a1c9ee766c43a048b2b98c95b311e4",
    "ctrl/ctrl0000/ctrl0000gpu.h": "9e7c9cc2c637e427fa8a386cface2b75b6c9a9283c8e5c4ff892547252c4ba1d",
    "ctrl/ctrl0000/ctrl0000system.h": "101e936c8e16d6cd5ce42d843ed968b5f2bd2a6054fe4677b0aabb5cc1166d0c",
    "ctrl/ctrl0080/ctrl0080gpu.h": "5e2e10b8daca158f601d9b01ab6e4e3c375ee2ed71d9765759b212d0c0ccf479",
    "ctrl/ctrl0080/ctrl0080fifo.h": "ee9790f798eb17b47f1e4f18f3a4930d6141bdf096515a979c89bdb5b814cebf",
    "ctrl/ctrl2080/ctrl2080gpu.h": "3488d2075f49006b27f30d9e9c9c1c397723a9793aabd622c4429718e2f446b9",
    "ctrl/ctrl2080/ctrl2080fb.h": "4f4fed55f718326a2ee45c501f848c17d9dbff169b3d5da1f4d1b965a37b95f9",
    "ctrl/ctrl2080/ctrl2080gr.h": "e45507dfa84b270593481083e6d76b06d683d22fcd7cf4346113789bd2c57114",
    "ctrl/ctrl2080/ctrl2080mc.h": "c6ef9f9a211e2ad746d92b7e1625da05dd1cdfc56ce007ae794de2e21f105e07",
    "ctrl/ctrla06c.h": "3ebd22b3d471e4242497e063fd8bbf678f283fa6ec479af4e1f7faad315ff56a",
    "ctrl/ctrlc36f.h": "a312cbe9e7daa23359f9ce06f612ea4d55e91aa027b914dffc596ad309cdd2b5",
    "ctrl/ctrl90f1.h": "ed30642e8648456affe5923c9c6284d7c61964b56bab67ccb0d7f4dc595967a9",
    "uvm_types.h": "27787ffb434b709cc257e56bd05314d56239ebdd9f4378b21e2c30612f0ac465",
    "uvm_linux_ioctl.h": "0ffb5cf3679fb5e150745e54b72fab861e319823e419f36376468a60862c2748",
    "uvm_ioctl.h": "b20682169a24cf0e4387e8b95acfc0f37a9d50c6849caa2ca1b333f872c6db80",
    "ctrl2080mc.h": "62c3aa00ebd561e9cb690780337aab040eeb1380da7605f010c3867a89092933",
})
NVIDIA_OPEN_575_TAG = "575.64.05"
NVIDIA_OPEN_575 = _nv_git("575", "d89031330084ad34dbfe15997454a4bb1674e0b1", {
    "nv-ioctl-numbers.h": "7f449a019521f2f858a2d485eed1ee0fa4a8ffc82c9aecd484be5d3f6821f87d",
    "nv-ioctl.h": "5b3838e454ae4ded4d2cd120622681ba56bf296c3701a4f1b832b6b9e3b534df",
    "nv_escape.h": "12850ee7368dbfeba1e2392f9ff7fb44563d88ed12cbf478d0c0f61a03763570",
    "nvos.h": "31aa0d3ec4f381801bdfd2cfb21be5048e2a1bbc85ffb49e28a25015094a1373",
    "nv-unix-nvos-params-wrappers.h": "d3ff263781baae28ade28d5fd7a9f69d2019e8f4ca7bfb5675fa280be77792e5",
    "nvstatus.h": "e8267172a1f7a56420d612c6734b3554b9ff6a3d33fdda21b1371ff4ce4b8675",
    "class/cl0000.h": "2f8c158b1e0d55fb425497054539e9dcb24002ec5e4949dd56b9b2b8e17d0208",
    "class/cl0005.h": "4946d20304410bd72d97cb2bcc649a225b0eccc5aafa6dc9ac975d6180865ebd",
    "class/cl9067.h": "d2266b0ba4b84897c4c3d1b0f5047c72a9d5247c61c5bf0bfcbb7812e0b53654",
    "class/cl003e.h": "4870b6c5592fe481075143a0724d5767fb745ae5a04a15fc62fc2246dfba6c47",
    "class/cl0040.h": "8e6fef4c77c91a352b862767d7292951fe44f5a4b2271fa5bbc7b03b3c7bd414",
    "class/cl0070.h": "6617fb96ec110b5d3cad0ecff9f1aac20fa824eb3134b3fefe5615e35c1ea01f",
    "class/cl0071.h": "eb25c028642197fafa6c5c51dfceb081363dec65d50331d05de4d0140ee9e0eb",
    "class/cl0080.h": "8829ae3793aaad80dc8e9b560882d4e900565de7ce7832c0ea0ceffe7fe12b08",
    "class/cl00b1.h": "8d5912a50293e9cf54450bfa898f53b16b6b45d501ed89462f5857bddf2a3862",
    "class/cl00fd.h": "ea0f1405ffcb230ffa34f3e1bfd364781b6a62ce7eb2add67b389aa08cba700a",
    "class/cl2080.h": "6f0c32970e6ba7e56dec28c44594b41570237bf74b1ea33ab5e8bcd139805351",
    "class/cl90f1.h": "c1bd28c0a38f74b3e92c6a0b52b2e76bd6782ca6b112593dc69eda88913600b9",
    "class/cla06c.h": "30846382b0e34e930ce16d4ea9f31245b561509171a7df1bf1c0560a7b101053",
    "class/clc361.h": "65c33030f555713c63d3e8aba43f09738c46823bab141a9a07145ca22dc9f06b",
    "class/clc461.h": "b0bc3bad11a680f3a61b3cd98a3f84f46ffb164ff308351951dd807f1a5db047",
    "class/clc561.h": "a755fbb2c34063ca9a3bb707d5bf2481e92e28a0d3bdc7430937f5ee3dba8d43",
    "class/clc661.h": "6e9ff50400d4175448ed7348524eb2634f8536680b594989b9b08757df590393",
    "class/clc56f.h": "8b7a6d6d5d5e3538f2f3e3b975d00c4aa94bd2480008c49aefcfc2566e3f658e",
    "class/clc86f.h": "698b3533cdeb95ab030428b6f7712a0870868ccc0e8f02f9137d78e5e1dfd297",
    "class/clc6c0.h": "2e8352bf73e395b827282af96535778bf43832186870ed2306a7db818d38da42",
    "class/clc7c0.h": "4cc2a76fd66d9124b962adaa68ceadcf8928a2589f0e195dd1d73db260234d0c",
    "class/clc9c0.h": "abdfdcfdd2dd5e0a9c823cde3894beceebba79322dc0bbc0a82c15da81e1804a",
    "class/clcbc0.h": "0e969c1329b339ee4551cf12095aa4aed9084c7d0095444eea34fcf80214d365",
    "class/clc6b5.h": "38caaf7efa2c9a58849ebf688c042eb43a4e6b1c670155df412e1e82ea580b71",
    "class/clc7b5.h": "9e8dbda2d6741abeb2d2c81bb92cb621445aac7facf8c8113f3cb3d12f1c7660",
    "class/clc8b5.h": "3e59ac4f2a558a7beb7660d3b0bc6f0ef6e7dac647977d9e2e4094dc6a4a2b88",
    "class/cl2080_notification.h": "9ee408643247c8f6c6c6e6b92ac72672a49ec5d4a00f1515caa70dc3d039e228",
    "alloc/alloc_channel.h": "f0211fbc8bf3f80841f699bf4ccb776d32517308782dfb3c8e99c7652986b5ab",
    "ctrl/ctrl0000/ctrl0000client.h": "3df9e7a953a2e766423119514a032e1069a1c9ee766c43a048b2b98c95b311e4",
    "ctrl/ctrl0000/ctrl0000gpu.h": "e38342ea79297150d0820c30cf7c1bff7f17a8594c97cb9fe6099c4b93c79821",
    "ctrl/ctrl0000/ctrl0000system.h": "47e8db0b6cacd4e71e62cfa6b5e4ccc8b81367e83fbfae798d6f0e6b59646a2d",
    "ctrl/ctrl0080/ctrl0080gpu.h": "16d0b09809cb7eae29fb7ecc73de27e3ee04f074330613f84a733e2aa2b91541",
    "ctrl/ctrl0080/ctrl0080fifo.h": "8c2b460e55ea2bd597393bb5662160361c004a98e0e8eed3f1278071eb60d701",
    "ctrl/ctrl2080/ctrl2080gpu.h": "9356d758da66eb0380238ed0f79c7125f7d5533de7e4332cf29d49feb209090c",
    "ctrl/ctrl2080/ctrl2080fb.h": "3e5be05d6c8bd6b547ae1a0bcaededa6f282a1c7993585f61fdd1b940c5c613e",
    "ctrl/ctrl2080/ctrl2080gr.h": "709c208a4a7481c057f48d603ddead20b9309545f4c6f7a8f99ad7954c940849",
    "ctrl/ctrl2080/ctrl2080mc.h": "8ddcf981dc143d69de221ddde3b283393cb97dc38e9a90228e96cef7b2929534",
    "ctrl/ctrla06c.h": "e3a92aa6db7774e5cbf1f672089532e5e3ce05d22dc54e330c8132889171a11f",
    "ctrl/ctrlc36f.h": "43c9b91089a609e76f68965d6516bae20bcf7d41a2c7a9e7b744e9baa2462141",
    "ctrl/ctrl90f1.h": "ed30642e8648456affe5923c9c6284d7c61964b56bab67ccb0d7f4dc595967a9",
    "uvm_types.h": "7a2fffd56a5dbfe7501fc951add17c3059d169f0110bd52b6774c876cb85999a",
    "uvm_linux_ioctl.h": "0ffb5cf3679fb5e150745e54b72fab861e319823e419f36376468a60862c2748",
    "uvm_ioctl.h": "4d44d702e798947b285018888791204516b6a9f71d888ead5ffafd570ce7859c",
    "ctrl2080mc.h": "436710b6cc1f656c6f00c9b857f0f5b4931b43ccce22fa7129ccd9b30a00721a",
})
NVIDIA_OPEN_580_TAG = "580.142"
NVIDIA_OPEN_580 = _nv_git("580", "1a5075f82128be3603d4a4657c7b689234306778", {
    "nv-ioctl-numbers.h": "7f449a019521f2f858a2d485eed1ee0fa4a8ffc82c9aecd484be5d3f6821f87d",
    "nv-ioctl.h": "65778345a796fce81827bbc63bd26fe80c60dbe970007009ae902f0a7f6e730f",
    "nv_escape.h": "12850ee7368dbfeba1e2392f9ff7fb44563d88ed12cbf478d0c0f61a03763570",
    "nvos.h": "07f9f453afbf080750663abc9e04e2d3b55500887303ba03bd6855916d2405bd",
    "nv-unix-nvos-params-wrappers.h": "d3ff263781baae28ade28d5fd7a9f69d2019e8f4ca7bfb5675fa280be77792e5",
    "nvstatus.h": "e8267172a1f7a56420d612c6734b3554b9ff6a3d33fdda21b1371ff4ce4b8675",
    "class/cl0000.h": "2f8c158b1e0d55fb425497054539e9dcb24002ec5e4949dd56b9b2b8e17d0208",
    "class/cl0005.h": "4946d20304410bd72d97cb2bcc649a225b0eccc5aafa6dc9ac975d6180865ebd",
    "class/cl9067.h": "d2266b0ba4b84897c4c3d1b0f5047c72a9d5247c61c5bf0bfcbb7812e0b53654",
    "class/cl003e.h": "4870b6c5592fe481075143a0724d5767fb745ae5a04a15fc62fc2246dfba6c47",
    "class/cl0040.h": "8e6fef4c77c91a352b862767d7292951fe44f5a4b2271fa5bbc7b03b3c7bd414",
    "class/cl0070.h": "6617fb96ec110b5d3cad0ecff9f1aac20fa824eb3134b3fefe5615e35c1ea01f",
    "class/cl0071.h": "eb25c028642197fafa6c5c51dfceb081363dec65d50331d05de4d0140ee9e0eb",
    "class/cl0080.h": "8829ae3793aaad80dc8e9b560882d4e900565de7ce7832c0ea0ceffe7fe12b08",
    "class/cl00b1.h": "8d5912a50293e9cf54450bfa898f53b16b6b45d501ed89462f5857bddf2a3862",
    "class/cl00fd.h": "ea0f1405ffcb230ffa34f3e1bfd364781b6a62ce7eb2add67b389aa08cba700a",
    "class/cl2080.h": "6f0c32970e6ba7e56dec28c44594b41570237bf74b1ea33ab5e8bcd139805351",
    "class/cl90f1.h": "c1bd28c0a38f74b3e92c6a0b52b2e76bd6782ca6b112593dc69eda88913600b9",
    "class/cla06c.h": "30846382b0e34e930ce16d4ea9f31245b561509171a7df1bf1c0560a7b101053",
    "class/clc361.h": "65c33030f555713c63d3e8aba43f09738c46823bab141a9a07145ca22dc9f06b",
    "class/clc461.h": "b0bc3bad11a680f3a61b3cd98a3f84f46ffb164ff308351951dd807f1a5db047",
    "class/clc561.h": "a755fbb2c34063ca9a3bb707d5bf2481e92e28a0d3bdc7430937f5ee3dba8d43",
    "class/clc661.h": "6e9ff50400d4175448ed7348524eb2634f8536680b594989b9b08757df590393",
    "class/clc56f.h": "8b7a6d6d5d5e3538f2f3e3b975d00c4aa94bd2480008c49aefcfc2566e3f658e",
    "class/clc86f.h": "698b3533cdeb95ab030428b6f7712a0870868ccc0e8f02f9137d78e5e1dfd297",
    "class/clc6c0.h": "2e8352bf73e395b827282af96535778bf43832186870ed2306a7db818d38da42",
    "class/clc7c0.h": "4cc2a76fd66d9124b962adaa68ceadcf8928a2589f0e195dd1d73db260234d0c",
    "class/clc9c0.h": "abdfdcfdd2dd5e0a9c823cde3894beceebba79322dc0bbc0a82c15da81e1804a",
    "class/clcbc0.h": "0e969c1329b339ee4551cf12095aa4aed9084c7d0095444eea34fcf80214d365",
    "class/clc6b5.h": "38caaf7efa2c9a58849ebf688c042eb43a4e6b1c670155df412e1e82ea580b71",
    "class/clc7b5.h": "9e8dbda2d6741abeb2d2c81bb92cb621445aac7facf8c8113f3cb3d12f1c7660",
    "class/clc8b5.h": "3e59ac4f2a558a7beb7660d3b0bc6f0ef6e7dac647977d9e2e4094dc6a4a2b88",
    "class/cl2080_notification.h": "d3c3db5408a3aaa3c87ef6b2015b0a0243afa04caf53e38dcb70f46ea49be331",
    "alloc/alloc_channel.h": "f0211fbc8bf3f80841f699bf4ccb776d32517308782dfb3c8e99c7652986b5ab",
    "ctrl/ctrl0000/ctrl0000client.h": "d058aa78a8e77b008581bc8e6da29e668951765936be0021ba2cf26584c7f43a",
    "ctrl/ctrl0000/ctrl0000gpu.h": "955d3f33157b516870bfa514bbcf613f705c990f0145a473a29e4cad97292b32",
    "ctrl/ctrl0000/ctrl0000system.h": "a0026d3c25deaf9d3be726d1b3487a30c2db0e751da6962ef72c42b00ae49295",
    "ctrl/ctrl0080/ctrl0080gpu.h": "63501de37b90eac1f4b966c8f90e9e4cb3ac1696f7c479e9a33fe86ea4bd18fd",
    "ctrl/ctrl0080/ctrl0080fifo.h": "fcd28f0c3a18d81f29f17ae4719405c94e5f1a5d55ebc6aeb7d719fe778b4eaf",
    "ctrl/ctrl2080/ctrl2080gpu.h": "1e9963a06da571064476c173eb2bdc7ce790aefae19425d8787c17615a2ba9cf",
    "ctrl/ctrl2080/ctrl2080fb.h": "4715a649456ac79f4aa63307b2a29a97d407964f064202e5b37e391e53895403",
    "ctrl/ctrl2080/ctrl2080gr.h": "634217ccd88d4063b6cd78e2a0a5ea1b963c76bb4e46fc79dd65c4b8fd6a2de3",
    "ctrl/ctrl2080/ctrl2080mc.h": "2cfd3953311c5609cb2fa5999f8e257e60d63c5361677b90efd99c7ae366353b",
    "ctrl/ctrla06c.h": "e3a92aa6db7774e5cbf1f672089532e5e3ce05d22dc54e330c8132889171a11f",
    "ctrl/ctrlc36f.h": "43c9b91089a609e76f68965d6516bae20bcf7d41a2c7a9e7b744e9baa2462141",
    "ctrl/ctrl90f1.h": "ed30642e8648456affe5923c9c6284d7c61964b56bab67ccb0d7f4dc595967a9",
    "uvm_types.h": "576803d1cf6b2933cc284dd2d5a47974649a1da27e1476d84d083c0f0f6355fa",
    "uvm_linux_ioctl.h": "0ffb5cf3679fb5e150745e54b72fab861e319823e419f36376468a60862c2748",
    "uvm_ioctl.h": "937a3fe1c0b2f4d8cfc18443d41ad10ee85c4445f954cc5c67b460ded2dd4916",
    "ctrl2080mc.h": "436710b6cc1f656c6f00c9b857f0f5b4931b43ccce22fa7129ccd9b30a00721a",
    "nv_uvm_user_types.h": "2f83bf2cf6bd7d53ab5fdb08bd820658498e2e0fd50b2d3e51823e043449cfa8",
})
NVIDIA_OPEN_590_TAG = "590.48.01"
NVIDIA_OPEN_590 = _nv_git("590", "2ccbad25e1af6a6ee6f38cf569f89f8b65d658ab", {
    "nv-ioctl-numbers.h": "7f449a019521f2f858a2d485eed1ee0fa4a8ffc82c9aecd484be5d3f6821f87d",
    "nv-ioctl.h": "c2aa6dad513c8dd1ae9bd412b649ccf1928c45dccf32adbbce8a3bed28420f48",
    "nv_escape.h": "12850ee7368dbfeba1e2392f9ff7fb44563d88ed12cbf478d0c0f61a03763570",
    "nvos.h": "e15be0320fbf6c22a948806cdf092528e75aa9a4545afd4f3ce77fd6131dd7b3",
    "nv-unix-nvos-params-wrappers.h": "d3ff263781baae28ade28d5fd7a9f69d2019e8f4ca7bfb5675fa280be77792e5",
    "nvstatus.h": "e8267172a1f7a56420d612c6734b3554b9ff6a3d33fdda21b1371ff4ce4b8675",
    "class/cl0000.h": "2f8c158b1e0d55fb425497054539e9dcb24002ec5e4949dd56b9b2b8e17d0208",
    "class/cl0005.h": "4946d20304410bd72d97cb2bcc649a225b0eccc5aafa6dc9ac975d6180865ebd",
    "class/cl9067.h": "d2266b0ba4b84897c4c3d1b0f5047c72a9d5247c61c5bf0bfcbb7812e0b53654",
    "class/cl003e.h": "4870b6c5592fe481075143a0724d5767fb745ae5a04a15fc62fc2246dfba6c47",
    "class/cl0040.h": "8e6fef4c77c91a352b862767d7292951fe44f5a4b2271fa5bbc7b03b3c7bd414",
    "class/cl0070.h": "6617fb96ec110b5d3cad0ecff9f1aac20fa824eb3134b3fefe5615e35c1ea01f",
    "class/cl0071.h": "eb25c028642197fafa6c5c51dfceb081363dec65d50331d05de4d0140ee9e0eb",
    "class/cl0080.h": "8829ae3793aaad80dc8e9b560882d4e900565de7ce7832c0ea0ceffe7fe12b08",
    "class/cl00b1.h": "8d5912a50293e9cf54450bfa898f53b16b6b45d501ed89462f5857bddf2a3862",
    "class/cl00fd.h": "dacf7fda18e112525dd9353c51aa34de5b7cc2420ae61f109430667f921e67e0",
    "class/cl2080.h": "6f0c32970e6ba7e56dec28c44594b41570237bf74b1ea33ab5e8bcd139805351",
    "class/cl90f1.h": "c1bd28c0a38f74b3e92c6a0b52b2e76bd6782ca6b112593dc69eda88913600b9",
    "class/cla06c.h": "30846382b0e34e930ce16d4ea9f31245b561509171a7df1bf1c0560a7b101053",
    "class/clc361.h": "65c33030f555713c63d3e8aba43f09738c46823bab141a9a07145ca22dc9f06b",
    "class/clc461.h": "b0bc3bad11a680f3a61b3cd98a3f84f46ffb164ff308351951dd807f1a5db047",
    "class/clc561.h": "a755fbb2c34063ca9a3bb707d5bf2481e92e28a0d3bdc7430937f5ee3dba8d43",
    "class/clc661.h": "6e9ff50400d4175448ed7348524eb2634f8536680b594989b9b08757df590393",
    "class/clc56f.h": "8b7a6d6d5d5e3538f2f3e3b975d00c4aa94bd2480008c49aefcfc2566e3f658e",
    "class/clc86f.h": "698b3533cdeb95ab030428b6f7712a0870868ccc0e8f02f9137d78e5e1dfd297",
    "class/clc6c0.h": "2e8352bf73e395b827282af96535778bf43832186870ed2306a7db818d38da42",
    "class/clc7c0.h": "4cc2a76fd66d9124b962adaa68ceadcf8928a2589f0e195dd1d73db260234d0c",
    "class/clc9c0.h": "abdfdcfdd2dd5e0a9c823cde3894beceebba79322dc0bbc0a82c15da81e1804a",
    "class/clcbc0.h": "0e969c1329b339ee4551cf12095aa4aed9084c7d0095444eea34fcf80214d365",
    "class/clc6b5.h": "38caaf7efa2c9a58849ebf688c042eb43a4e6b1c670155df412e1e82ea580b71",
    "class/clc7b5.h": "9e8dbda2d6741abeb2d2c81bb92cb621445aac7facf8c8113f3cb3d12f1c7660",
    "class/clc8b5.h": "382b569afc976ab60f8f548c3f31a749c66b27e1964cd29bfac73a03abac45d8",
    "class/cl2080_notification.h": "3d3fdc62667fe4f637b4d486b34165fd62a6d00df93b55def38193c4bd47ef33",
    "alloc/alloc_channel.h": "f0211fbc8bf3f80841f699bf4ccb776d32517308782dfb3c8e99c7652986b5ab",
    "ctrl/ctrl0000/ctrl0000client.h": "d058aa78a8e77b008581bc8e6da29e668951765936be0021ba2cf26584c7f43a",
    "ctrl/ctrl0000/ctrl0000gpu.h": "4d44378454f20394c9c5771a1b7b5c2cd9383b0b762c2827758a4ccdcef50fbf",
    "ctrl/ctrl0000/ctrl0000system.h": "375d54327cab4116a2ab39ba3f47e20117c38ef33e87adddda20345eb576decb",
    "ctrl/ctrl0080/ctrl0080gpu.h": "63501de37b90eac1f4b966c8f90e9e4cb3ac1696f7c479e9a33fe86ea4bd18fd",
    "ctrl/ctrl0080/ctrl0080fifo.h": "fcd28f0c3a18d81f29f17ae4719405c94e5f1a5d55ebc6aeb7d719fe778b4eaf",
    "ctrl/ctrl2080/ctrl2080gpu.h": "73f146d0b921009acd171e1c9d86d2da8d052957af6d26f573dbe46ed7cbd28a",
    "ctrl/ctrl2080/ctrl2080fb.h": "73018a2d15daaafa7c641ad1a4901d88a970739f2197cfb03f7f90b54f0d3ea6",
    "ctrl/ctrl2080/ctrl2080gr.h": "f3baa5a657921ec856d69e50cfe2990109cd97f106ff905797f08cf9047ccb72",
    "ctrl/ctrl2080/ctrl2080mc.h": "2cfd3953311c5609cb2fa5999f8e257e60d63c5361677b90efd99c7ae366353b",
    "ctrl/ctrla06c.h": "e3a92aa6db7774e5cbf1f672089532e5e3ce05d22dc54e330c8132889171a11f",
    "ctrl/ctrlc36f.h": "43c9b91089a609e76f68965d6516bae20bcf7d41a2c7a9e7b744e9baa2462141",
    "ctrl/ctrl90f1.h": "ed30642e8648456affe5923c9c6284d7c61964b56bab67ccb0d7f4dc595967a9",
    "uvm_types.h": "94d4124ee87678f45148fe679bf249e19a89c987815aaff6dc72b45ebf606b14",
    "uvm_linux_ioctl.h": "0ffb5cf3679fb5e150745e54b72fab861e319823e419f36376468a60862c2748",
    "uvm_ioctl.h": "ef6bbde8bc9c2ebd0cbbfd29d702ca2239a97d8f0a259ceee09607a550023515",
    "ctrl2080mc.h": "e7044317cefd8a86de3f53c702e4ce734497e5da5458fc0f10a6ed2517e4729e",
    "nv_uvm_user_types.h": "fffd902620642d566fe06619343a151795c7d0e4540c904a41baea24aae03d8c",
})
NVIDIA_OPEN_595_TAG = "595.45.04"
NVIDIA_OPEN_595 = _nv_git("595", "df1c9a3de2be4b130f4fc7680f7198193d8ac6ad", {
    "nv-ioctl-numbers.h": "7a9d2670092496aca00b5109b61e41c90c9f66ace404965a728d692b77191352",
    "nv-ioctl.h": "c2aa6dad513c8dd1ae9bd412b649ccf1928c45dccf32adbbce8a3bed28420f48",
    "nv_escape.h": "51da358aac86eba22c9ca9db137cd2b41e36f433b9848f99dbc1ce744f5115e7",
    "nvos.h": "5786e4c046f08dd627f13760474599624d578325938fe269cb4321c2e3502c02",
    "nv-unix-nvos-params-wrappers.h": "d3ff263781baae28ade28d5fd7a9f69d2019e8f4ca7bfb5675fa280be77792e5",
    "nvstatus.h": "e8267172a1f7a56420d612c6734b3554b9ff6a3d33fdda21b1371ff4ce4b8675",
    "class/cl0000.h": "2f8c158b1e0d55fb425497054539e9dcb24002ec5e4949dd56b9b2b8e17d0208",
    "class/cl0005.h": "4946d20304410bd72d97cb2bcc649a225b0eccc5aafa6dc9ac975d6180865ebd",
    "class/cl9067.h": "d2266b0ba4b84897c4c3d1b0f5047c72a9d5247c61c5bf0bfcbb7812e0b53654",
    "class/cl003e.h": "4870b6c5592fe481075143a0724d5767fb745ae5a04a15fc62fc2246dfba6c47",
    "class/cl0040.h": "8e6fef4c77c91a352b862767d7292951fe44f5a4b2271fa5bbc7b03b3c7bd414",
    "class/cl0070.h": "6617fb96ec110b5d3cad0ecff9f1aac20fa824eb3134b3fefe5615e35c1ea01f",
    "class/cl0071.h": "eb25c028642197fafa6c5c51dfceb081363dec65d50331d05de4d0140ee9e0eb",
    "class/cl0080.h": "8829ae3793aaad80dc8e9b560882d4e900565de7ce7832c0ea0ceffe7fe12b08",
    "class/cl00b1.h": "8d5912a50293e9cf54450bfa898f53b16b6b45d501ed89462f5857bddf2a3862",
    "class/cl00fd.h": "dacf7fda18e112525dd9353c51aa34de5b7cc2420ae61f109430667f921e67e0",
    "class/cl2080.h": "6f0c32970e6ba7e56dec28c44594b41570237bf74b1ea33ab5e8bcd139805351",
    "class/cl90f1.h": "c1bd28c0a38f74b3e92c6a0b52b2e76bd6782ca6b112593dc69eda88913600b9",
    "class/cla06c.h": "30846382b0e34e930ce16d4ea9f31245b561509171a7df1bf1c0560a7b101053",
    "class/clc361.h": "65c33030f555713c63d3e8aba43f09738c46823bab141a9a07145ca22dc9f06b",
    "class/clc461.h": "b0bc3bad11a680f3a61b3cd98a3f84f46ffb164ff308351951dd807f1a5db047",
    "class/clc561.h": "a755fbb2c34063ca9a3bb707d5bf2481e92e28a0d3bdc7430937f5ee3dba8d43",
    "class/clc661.h": "6e9ff50400d4175448ed7348524eb2634f8536680b594989b9b08757df590393",
    "class/clc56f.h": "8b7a6d6d5d5e3538f2f3e3b975d00c4aa94bd2480008c49aefcfc2566e3f658e",
    "class/clc86f.h": "698b3533cdeb95ab030428b6f7712a0870868ccc0e8f02f9137d78e5e1dfd297",
    "class/clc6c0.h": "2e8352bf73e395b827282af96535778bf43832186870ed2306a7db818d38da42",
    "class/clc7c0.h": "4cc2a76fd66d9124b962adaa68ceadcf8928a2589f0e195dd1d73db260234d0c",
    "class/clc9c0.h": "abdfdcfdd2dd5e0a9c823cde3894beceebba79322dc0bbc0a82c15da81e1804a",
    "class/clcbc0.h": "0e969c1329b339ee4551cf12095aa4aed9084c7d0095444eea34fcf80214d365",
    "class/clc6b5.h": "38caaf7efa2c9a58849ebf688c042eb43a4e6b1c670155df412e1e82ea580b71",
    "class/clc7b5.h": "9e8dbda2d6741abeb2d2c81bb92cb621445aac7facf8c8113f3cb3d12f1c7660",
    "class/clc8b5.h": "382b569afc976ab60f8f548c3f31a749c66b27e1964cd29bfac73a03abac45d8",
    "class/cl2080_notification.h": "3d3fdc62667fe4f637b4d486b34165fd62a6d00df93b55def38193c4bd47ef33",
    "alloc/alloc_channel.h": "f0211fbc8bf3f80841f699bf4ccb776d32517308782dfb3c8e99c7652986b5ab",
    "ctrl/ctrl0000/ctrl0000client.h": "d058aa78a8e77b008581bc8e6da29e668951765936be0021ba2cf26584c7f43a",
    "ctrl/ctrl0000/ctrl0000gpu.h": "68f4a7e9cc28e1ac97709315c89fc5e76954d7abcb96c14c51e740c9cedb897d",
    "ctrl/ctrl0000/ctrl0000system.h": "c6842a47828c344df843a5583c977ea9a2672add557af03d585ae35e37c7fce4",
    "ctrl/ctrl0080/ctrl0080gpu.h": "63501de37b90eac1f4b966c8f90e9e4cb3ac1696f7c479e9a33fe86ea4bd18fd",
    "ctrl/ctrl0080/ctrl0080fifo.h": "fcd28f0c3a18d81f29f17ae4719405c94e5f1a5d55ebc6aeb7d719fe778b4eaf",
    "ctrl/ctrl2080/ctrl2080gpu.h": "bf3134db0c8e91c6bd8bb7d3b9dc98291d5dd9ba6f65367b97a3dabd21b58154",
    "ctrl/ctrl2080/ctrl2080fb.h": "154a92c25d5754c47401a8c5e17c03d8af2b15a558a4853bb57a29ec98bf538d",
    "ctrl/ctrl2080/ctrl2080gr.h": "23e6eb351162dca855327906756b94517dffc3bfe8200ab6e5bbb042cb539a6d",
    "ctrl/ctrl2080/ctrl2080mc.h": "92323246888aec5cd6766fa12bc1bfaa8759f61b6e6f961226e812ff68498948",
    "ctrl/ctrla06c.h": "e3a92aa6db7774e5cbf1f672089532e5e3ce05d22dc54e330c8132889171a11f",
    "ctrl/ctrlc36f.h": "43c9b91089a609e76f68965d6516bae20bcf7d41a2c7a9e7b744e9baa2462141",
    "ctrl/ctrl90f1.h": "ed30642e8648456affe5923c9c6284d7c61964b56bab67ccb0d7f4dc595967a9",
    "uvm_types.h": "94d4124ee87678f45148fe679bf249e19a89c987815aaff6dc72b45ebf606b14",
    "uvm_linux_ioctl.h": "0ffb5cf3679fb5e150745e54b72fab861e319823e419f36376468a60862c2748",
    "uvm_ioctl.h": "9cc909360f2d19135852390fb66a12fe4d22ca39c19e2609b2ff5e925df4bdf4",
    "ctrl2080mc.h": "e7044317cefd8a86de3f53c702e4ce734497e5da5458fc0f10a6ed2517e4729e",
    "nv_uvm_user_types.h": "fffd902620642d566fe06619343a151795c7d0e4540c904a41baea24aae03d8c",
})
# branch -> (tag, package) of every git-pinned branch: each one's RM/UVM targets (_nv_set) and
# method-field target (_nv_fields) are made from this table
NVIDIA_OPEN_GIT = {
    "550": (NVIDIA_OPEN_550_TAG, NVIDIA_OPEN_550),
    "570": (NVIDIA_OPEN_570_TAG, NVIDIA_OPEN_570),
    "575": (NVIDIA_OPEN_575_TAG, NVIDIA_OPEN_575),
    "580": (NVIDIA_OPEN_580_TAG, NVIDIA_OPEN_580),
    "590": (NVIDIA_OPEN_590_TAG, NVIDIA_OPEN_590),
    "595": (NVIDIA_OPEN_595_TAG, NVIDIA_OPEN_595),
}

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
    return _nv_branch("535", NVIDIA_OPEN_535, name, paths, description, **extra)


def _nv_branch(branch: str, package: Package, name: str, paths: tuple[str, ...], description: str,
               **extra) -> Target:
    return Target(f"nv.r{branch}.{name}", KIND_STRUCTS, package, paths, description,
                  output=f"autogen/nv/r{branch}/{name}.py", include_dirs=NV_INCLUDE_DIRS, prelude=NV_PRELUDE,
                  **extra)


def _nv_set(branch: str, package: Package, release: str) -> tuple[Target, ...]:
    """The RM and UVM binding targets of one driver branch (the same headers for every branch, and
    the ones that moved: _nv_set_files)."""
    def one(name: str, paths: tuple[str, ...], what: str) -> Target:
        stubs = NV_STDINT_STUB if name == "escape" and branch in NV_STDINT_BRANCHES else {}
        return _nv_branch(branch, package, name, paths, f"NVIDIA r{branch} ({release}) {what}", stubs=stubs)
    return tuple(one(name, paths, what) for name, (paths, what) in _nv_set_files(branch).items())


def _nv_fields(branch: str, package: Package, release: str) -> Target:
    """One driver branch's method and GP-entry field target (autogen/nv_fields.py)."""
    return Target(f"nv.r{branch}.fields", KIND_NV_FIELDS, package,
                  tuple(f"{NV_SDK}/class/{name}.h" for name in NV_FIELD_CLASSES),
                  f"NVIDIA r{branch} ({release}) method and GP-entry fields of the GPFIFO host (clc56f.h, "
                  "clc86f.h), compute (clc6c0.h), copy (clc6b5.h) and usermode (clc361.h) classes: bit "
                  "ranges and values.", output=f"autogen/nv/r{branch}/fields.py",
                  domain_prefixes={f"NV{name[2:].upper()}_": "" for name in NV_FIELD_CLASSES})


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
    # every git-pinned branch: r550, r570, r575, r580, r590, r595
    *(target for branch, (tag, package) in NVIDIA_OPEN_GIT.items()
      for target in _nv_set(branch, package, tag)),
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
    *(_nv_fields(branch, package, tag) for branch, (tag, package) in NVIDIA_OPEN_GIT.items()),
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
