"""Generated AMD register modules, one per IP block and version, and the map from IP to module.

Each module (written by autogen/gen_regs.py from the amdgpu `*_offset.h` / `*_sh_mask.h` pair of the
same name) exposes its registers as attributes (`gc_11_0_0.regGRBM_STATUS`), `get(name)` and
`names()`. Importing this package imports none of them; `load()` imports one on demand.
"""
from __future__ import annotations

import importlib
from types import ModuleType

# (IP block as amdgpu's discovery names it, IP version) -> module holding its registers.
# One header pair serves several blocks: SDMA 6.0 registers live in GC 11.0.0, MP0 and MP1 share MP 13.0.0.
MODULE_FOR_IP: dict[tuple[str, tuple[int, int, int]], str] = {
    ("GC", (11, 0, 0)): "gc_11_0_0",
    ("SDMA", (6, 0, 0)): "gc_11_0_0",
    ("MMHUB", (3, 0, 0)): "mmhub_3_0_0",
    ("NBIO", (4, 3, 0)): "nbio_4_3_0",
    ("MP0", (13, 0, 0)): "mp_13_0_0",
    ("MP1", (13, 0, 0)): "mp_13_0_0",
    ("OSSSYS", (6, 0, 0)): "osssys_6_0_0",
    ("HDP", (6, 0, 0)): "hdp_6_0_0",
}

# every generated register module in this package
MODULES: tuple[str, ...] = tuple(sorted(set(MODULE_FOR_IP.values())))

# amdgpu's per-engine SDMA blocks (SDMA0_HWIP..SDMA3_HWIP, one discovery entry each) all take their
# registers from the SDMA entry above (sdma_v6_0.c reaches every engine through GC's header)
REGISTER_BLOCK_OF: dict[str, str] = {"SDMA0": "SDMA", "SDMA1": "SDMA", "SDMA2": "SDMA", "SDMA3": "SDMA"}


def load_module(name: str) -> ModuleType:
    """Import one register module by its file name (e.g. "gc_11_0_0")."""
    if name not in MODULES:
        raise LookupError(f"no register module {name!r}; known: {', '.join(MODULES)}")
    return importlib.import_module(f"{__name__}.{name}")


def load(ip: str, version: tuple[int, int, int]) -> ModuleType:
    """The register module for an IP block at a version, e.g. load("SDMA", (6, 0, 0))."""
    module_name = MODULE_FOR_IP.get((REGISTER_BLOCK_OF.get(ip, ip), tuple(version)))
    if module_name is None:
        known = ", ".join(f"{block} {'.'.join(map(str, ver))}" for block, ver in MODULE_FOR_IP)
        raise LookupError(f"no registers generated for {ip} {'.'.join(map(str, version))}; known: {known}")
    return load_module(module_name)
