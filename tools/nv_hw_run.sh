#!/bin/bash
# The NVIDIA hardware check as one command, for a machine lent for a short time (docs/nv.md,
# "Hardware check"): run from the repository root, with no install step (PYTHONPATH=.; the runtime
# needs only numpy). Writes what it finds to $OUT (or ./nv-hw-out): facts.txt, nv_hw.json,
# nv_hw.log (every RM escape and UVM ioctl with its status, failed checks' tracebacks) and
# pytest_hw.txt. Each step is bounded; a failing step does not stop the next one.
set -u
out=${OUT:-nv-hw-out}
mkdir -p "$out"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
{
    echo "== date: $(date -u +%FT%TZ)"
    echo "== uname: $(uname -a)"
    echo "== python: $($py -c 'import sys, numpy; print(sys.version.split()[0], "numpy", numpy.__version__)' 2>&1)"
    echo "== /proc/driver/nvidia/version:"; cat /proc/driver/nvidia/version 2>&1
    echo "== device nodes:"; ls -l /dev/nvidia* 2>&1
    echo "== nvidia-smi:"; timeout 30 nvidia-smi 2>&1 | head -20
    echo "== nvcc:"; (timeout 30 nvcc --version || timeout 30 /usr/local/cuda/bin/nvcc --version) 2>&1 | tail -2
} > "$out/facts.txt" 2>&1
cat "$out/facts.txt"
echo "== tools.nv_hw_check"
timeout 300 "$py" -m tools.nv_hw_check --json --timeout 10 --log "$out/nv_hw.log" > "$out/nv_hw.json"
echo "nv_hw_check exit status $?"
cat "$out/nv_hw.json"
echo "== last lines of nv_hw.log"
tail -40 "$out/nv_hw.log" 2>/dev/null
echo "== hardware tests (tests/nv, marked hardware)"
timeout 240 "$py" -m pytest -q -m hardware -p no:cacheprovider tests/nv > "$out/pytest_hw.txt" 2>&1
echo "pytest exit status $?"
tail -30 "$out/pytest_hw.txt"
