"""The ABI a simulated NVIDIA driver answers with, by the branch of the version it presents.

A driver release's parameter blocks are those of its branch's headers (autogen/nv/r<branch>/: r535,
r550, r570, r575, r580, r590, r595): a 535.x driver checks sizes and reads fields with the r535
layouts, a 590.x driver with the r590 ones (escape.c RmIoctl compares dataSize with sizeof() of the
structure it was built with; uvm.c copies sizeof(params) for each command). A field a branch dropped
is absent from its layout (590's UVM_FREE_PARAMS has no length): the handlers test the layout's
FIELDS, not the version. `layout(struct, branch)` gives the branch's struct of the same name
as an r535 one, so the mock's tables can name r535 types and still answer with the branch's sizes.
A branch without bindings here keeps the r535 layouts (BASE_BRANCH): such a driver is refused by the
client before its first RM escape, so only its version file is ever read.
"""
from __future__ import annotations

import functools
import importlib
import importlib.util

BASE_BRANCH = "535"  # the branch whose modules the mock's tables import
# branches whose nvidia_ioctl checks every escape's size before serving it (kernel-open/nvidia/nv.c
# nv_validate_ioctls, first in 595.44.02): an array escape (NV_ESC_CARD_INFO) needs a non-empty
# whole number of records, where older branches served as many records as fit
VALIDATING_BRANCHES = ("595",)
_BASE_PACKAGE = f"autogen.nv.r{BASE_BRANCH}"


def branch_of(version: str) -> str:
    """The branch (major version) of a driver version: "570.211.01" -> "570"."""
    return version.split(".")[0]


@functools.cache
def has_bindings(branch: str) -> bool:
    return branch.isdigit() and importlib.util.find_spec(f"autogen.nv.r{branch}") is not None


def abi_branch(version: str) -> str:
    """The branch whose layouts a driver presenting `version` answers with."""
    branch = branch_of(version)
    return branch if has_bindings(branch) else BASE_BRANCH


@functools.cache
def layout(struct: type, branch: str) -> type:
    """The struct named like `struct` (an r535 generated type) in `branch`'s module of the same kind."""
    module = struct.__module__
    if branch == BASE_BRANCH or not module.startswith(_BASE_PACKAGE + "."):
        return struct
    kind = module.rpartition(".")[2]
    return getattr(importlib.import_module(f"autogen.nv.r{branch}.{kind}"), struct.__name__)
