"""Benchmark of the generated register bindings: import the RDNA3 register set, look registers up by name.

`python -m tools.bench autogen` calls run(). The measured work runs in a fresh interpreter so neither
module caches nor decoded registers from this process flatter it; the names it looks up are chosen
here (evenly spread over every module) and handed to it. Figures are seconds; nothing is asserted.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from autogen.amd import regs as amd_regs

NAME = "autogen"
LOOKUPS = 1000
_REPO_ROOT = Path(__file__).resolve().parent.parent

# runs in the fresh interpreter; stdin holds the work from choose_work() as JSON
_CHILD = r"""
import importlib
import json
import sys
import time

work = json.loads(sys.stdin.read())
start = time.perf_counter()
modules = {name: importlib.import_module("autogen.amd.regs." + name) for name in work["modules"]}
imported = time.perf_counter()
for module_name, register_name in work["registers"]:
    getattr(modules[module_name], register_name)
registers_done = time.perf_counter()
for module_name, register_name, field_name in work["fields"]:
    getattr(modules[module_name], register_name).field(field_name)
fields_done = time.perf_counter()
print(json.dumps({
    "import_s": imported - start,
    "register_lookups_s": registers_done - imported,
    "field_lookups_s": fields_done - registers_done,
}))
"""


def _spread(items: list, count: int, phase: int) -> list:
    """`count` items taken at even steps through `items`, starting `phase` steps in."""
    step = max(1, len(items) // count)
    picked = items[phase % step::step]
    return picked[:count]


def choose_work(count: int = LOOKUPS) -> dict:
    """The registers and fields to look up: spread evenly over all modules, two disjoint register sets."""
    everything = []
    for module_name in amd_regs.MODULES:
        module = amd_regs.load_module(module_name)
        everything.extend((module_name, name) for name in module.names())
    registers = _spread(everything, count, 0)
    field_registers = _spread(everything, count * 2, 1)
    fields = []
    for module_name, register_name in field_registers:
        register = amd_regs.load_module(module_name).get(register_name)
        if register.fields and len(fields) < count:
            field_names = list(register.fields)
            fields.append((module_name, register_name, field_names[len(fields) % len(field_names)]))
    return {"modules": list(amd_regs.MODULES), "registers": registers, "fields": fields}


def _measure_in_fresh_interpreter(work: dict, bytecode_cache: str) -> dict[str, float]:
    """Run the lookups in a new interpreter whose bytecode cache is the folder `bytecode_cache`."""
    environment = dict(os.environ)
    search_path = [str(_REPO_ROOT), environment.get("PYTHONPATH", "")]
    environment["PYTHONPATH"] = os.pathsep.join(part for part in search_path if part)
    environment["PYTHONPYCACHEPREFIX"] = bytecode_cache
    environment.pop("PYTHONDONTWRITEBYTECODE", None)
    started = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, "-c", _CHILD], input=json.dumps(work), capture_output=True, text=True,
        env=environment, check=True, timeout=120,
    )
    figures = json.loads(completed.stdout)
    figures["process_wall_s"] = time.perf_counter() - started
    return figures


def run() -> dict[str, float]:
    """Seconds for: importing every register module, 1,000 register and 1,000 field lookups, total."""
    work = choose_work()
    with tempfile.TemporaryDirectory() as bytecode_cache:
        # first run: empty cache, the modules are compiled from source as on a fresh checkout;
        # second run: the bytecode the first one wrote is loaded, as on every later start
        cold = _measure_in_fresh_interpreter(work, bytecode_cache)
        warm = _measure_in_fresh_interpreter(work, bytecode_cache)
    total = warm["import_s"] + warm["register_lookups_s"] + warm["field_lookups_s"]
    return {
        "modules": float(len(work["modules"])),
        "register_lookups": float(len(work["registers"])),
        "field_lookups": float(len(work["fields"])),
        "import_all_s": warm["import_s"],
        "register_lookups_s": warm["register_lookups_s"],
        "field_lookups_s": warm["field_lookups_s"],
        "total_s": total,
        "interpreter_with_startup_s": warm["process_wall_s"],
        "import_all_no_bytecode_s": cold["import_s"],
        "total_no_bytecode_s": cold["import_s"] + cold["register_lookups_s"] + cold["field_lookups_s"],
    }


if __name__ == "__main__":
    for key, value in run().items():
        print(f"{key:30} {value:.4f}")
