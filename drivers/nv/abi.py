"""The RM/UVM bindings of each supported NVIDIA driver branch, keyed by branch ("535", "550", ...).

`for_branch(branch)` gives an `ABI` whose members are the branch's generated modules
(autogen/nv/r<branch>/): every struct the driver builds or reads (parameter blocks whose layout
changes between branches: NV_CHANNEL_ALLOC_PARAMS, NV_MEMORY_ALLOCATION_PARAMS,
UVM_MAP_EXTERNAL_ALLOCATION_PARAMS, UVM_FREE_PARAMS...) comes from there. Numbers (escapes, classes,
controls, statuses) are the same in every supported branch (tests/nv/test_rm_branches.py compares the
ones the driver and the mock use), so modules may keep taking them from r535.
"""
from __future__ import annotations

import dataclasses
import importlib
from types import ModuleType

# branch -> release its bindings were generated from (autogen/manifest.py: NVIDIA_OPEN_535 is Debian's
# nvidia-open-gpu-kernel-modules 535.261.03-1; the others are NVIDIA/open-gpu-kernel-modules at the tag,
# NVIDIA_OPEN_GIT)
RELEASES = {"535": "535.261.03", "550": "550.163.01", "570": "570.211.01", "575": "575.64.05",
            "580": "580.142", "590": "590.48.01", "595": "595.45.04"}
SUPPORTED_BRANCHES = tuple(RELEASES)
_MODULES = ("classes", "ctrl", "escape", "nvos", "status", "uvm", "fields")


@dataclasses.dataclass(frozen=True)
class ABI:
    """One branch's generated binding modules."""

    branch: str
    classes: ModuleType
    ctrl: ModuleType
    escape: ModuleType
    nvos: ModuleType
    status: ModuleType
    uvm: ModuleType
    fields: ModuleType


_CACHE: dict[str, ABI] = {}


def for_branch(branch: str) -> ABI:
    """The bindings of `branch` (one of SUPPORTED_BRANCHES; KeyError otherwise)."""
    if branch not in RELEASES:
        raise KeyError(branch)
    if branch not in _CACHE:
        modules = {name: importlib.import_module(f"autogen.nv.r{branch}.{name}") for name in _MODULES}
        _CACHE[branch] = ABI(branch, **modules)
    return _CACHE[branch]
