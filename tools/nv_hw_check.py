"""`python -m tools.nv_hw_check [DEVICE] [--json] [--timeout S]`: on a machine with an NVIDIA GPU
and its kernel driver, run the selftest through drivers.nv (the RM path, DEVICE default nv:0) and
compare its launch latency and copy bandwidth with CUDA's own on the same GPU.

CUDA's figures come from tools/nv_cuda_bench.cu (cuLaunchKernel + synchronize, median of 1000;
cudaMemcpy of 256 MiB from/to pinned host memory, best of 5), built here with nvcc (PATH or
/usr/local/cuda/bin, as compute.nv.compiler finds it) and run with a bound. The selftest's figures
are this project's: launch latency of a one-thread kernel waited for, copy-in/out through the
staging pipeline. The report names both and their ratio; only the selftest's checks decide the exit
status (0 all passed, 1 a check failed, 2 no NVIDIA driver here). Nothing in this tool has run on a
real GPU yet.

The report starts with the machine's facts (kernel, Python, numpy, the driver's version as
/proc/driver/nvidia/version and the RM's own query give it, whether drivers.nv has bindings for its
branch, nvidia-smi's GPU line): on a refused or failing run they say why without another try.
`--log FILE` writes every RM escape and UVM ioctl with its status, and each failed check's
traceback, to FILE. tools/nv_hw_run.sh runs all of it as one command on a lent machine.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import pathlib
import platform
import subprocess
import sys
import tempfile

from compute.nv.compiler import find_nvcc

CTL_PATH = "/dev/nvidiactl"  # kernel-open/nvidia/nv.c: the control node the driver creates
SOURCE = pathlib.Path(__file__).resolve().parent / "nv_cuda_bench.cu"
BUILD_TIMEOUT_S = 180  # nvcc of one small file
RUN_TIMEOUT_S = 120  # 1000 launches and 10 copies of 256 MiB
FIGURES = ("launch_latency_us", "copy_in_MiB_s", "copy_out_MiB_s")
SMI_TIMEOUT_S = 30  # one nvidia-smi query
SMI_QUERY = "name,driver_version,pci.device_id,memory.total"  # nvidia-smi --help-query-gpu names
LOGGERS = ("drivers.nv", "compute.nv", "tools.selftest")  # what --log records at DEBUG


def environment(os_seam=None) -> dict:
    """The facts a hardware report needs to be read without another run (`os_seam`: the host's)."""
    import numpy

    from drivers.nv import abi as nv_abi
    from drivers.nv import rm as nv_rm
    from hal.host_os import HostOS
    from hal.os import O_CLOEXEC, O_RDWR

    facts: dict = {"kernel": platform.release(), "python": platform.python_version(),
                   "numpy": numpy.__version__, "supported_branches": list(nv_abi.SUPPORTED_BRANCHES)}
    os_seam = os_seam or HostOS()
    try:
        facts["proc_version"] = nv_rm.driver_version(os_seam)
    except Exception as exc:  # noqa: BLE001 - a fact we could not read is reported as such
        facts["proc_version"] = f"{type(exc).__name__}: {exc}"
    try:
        fd = os_seam.open(nv_rm.CTL_PATH, O_RDWR | O_CLOEXEC)
        try:
            facts["rm_version"] = nv_rm.query_version(os_seam, fd)
        finally:
            os_seam.close(fd)
        facts["branch_supported"] = facts["rm_version"].split(".")[0] in nv_abi.SUPPORTED_BRANCHES
    except Exception as exc:  # noqa: BLE001
        facts["rm_version"] = f"{type(exc).__name__}: {exc}"
    try:
        smi = subprocess.run(["nvidia-smi", f"--query-gpu={SMI_QUERY}", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=SMI_TIMEOUT_S)
        facts["nvidia_smi"] = (smi.stdout or smi.stderr).strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        facts["nvidia_smi"] = f"{type(exc).__name__}: {exc}"
    return facts


def log_to(path: str) -> None:
    """Send the driver's and the selftest's DEBUG records to `path`."""
    handler = logging.FileHandler(path, mode="w")
    handler.setFormatter(logging.Formatter("%(relativeCreated)9.1f ms %(name)s: %(message)s"))
    for name in LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(logging.DEBUG)
        logger.addHandler(handler)


def cuda_figures() -> dict:
    """CUDA's figures, or {"error": why} when nvcc, the build or the run fails."""
    nvcc = find_nvcc()
    if nvcc is None:
        return {"error": "nvcc not found (PATH, /usr/local/cuda/bin): install the CUDA toolkit"}
    with tempfile.TemporaryDirectory(prefix="gpuhal-nv-bench-") as scratch:
        binary = os.path.join(scratch, "bench")
        try:
            subprocess.run([nvcc, "-O2", "-o", binary, str(SOURCE), "-lcuda"], check=True,
                           capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
            done = subprocess.run([binary], check=True, capture_output=True, text=True,
                                  timeout=RUN_TIMEOUT_S)
        except subprocess.CalledProcessError as exc:
            return {"error": f"{exc.cmd[0]} failed ({exc.returncode}): {exc.stderr.strip()[-800:]}"}
        except subprocess.TimeoutExpired as exc:
            return {"error": f"{exc.cmd[0]} ran past {exc.timeout} s"}
        return json.loads(done.stdout)


def check(device: str = "nv:0", timeout_s: float | None = None) -> dict:
    from tools import selftest

    facts = environment()
    report = selftest.run(device, timeout_s=timeout_s)
    ours = {key: report.figures.get(key) for key in FIGURES}
    cuda = cuda_figures()
    ratios = {}
    for key in FIGURES:
        if isinstance(ours.get(key), (int, float)) and isinstance(cuda.get(key), (int, float)) and cuda[key]:
            ratios[key] = round(ours[key] / cuda[key], 3)
    return {"device": device, "ok": report.ok, "environment": facts, "selftest": report.as_json(),
            "gpuhal": ours, "cuda": cuda, "ratio_gpuhal_to_cuda": ratios}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.nv_hw_check", description=__doc__.split("\n")[0])
    parser.add_argument("device", nargs="?", default="nv:0", help="NVIDIA device string (default nv:0)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                        help="bound on each wait for the GPU (default: compute's)")
    parser.add_argument("--log", metavar="FILE",
                        help="write RM/UVM calls and failed checks' tracebacks here")
    args = parser.parse_args(argv)
    if not os.path.exists(CTL_PATH):
        print(f"nv_hw_check: {CTL_PATH} does not exist: no NVIDIA kernel driver is loaded here",
              file=sys.stderr)
        return 2
    if args.log:
        log_to(args.log)
    result = check(args.device, args.timeout)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        from tools import selftest
        from tools.selftest import Report

        selftest_report = Report(result["device"], result["selftest"]["note"], result["selftest"]["checks"],
                                 result["selftest"]["figures"])
        for key, value in result["environment"].items():
            print(f"{key}: {value}")
        print(selftest.format_report(selftest_report))
        print("against CUDA on the same GPU:")
        if "error" in result["cuda"]:
            print(f"  CUDA benchmark unavailable: {result['cuda']['error']}")
        for key in FIGURES:
            print(f"  {key}: gpuhal {result['gpuhal'].get(key)}, CUDA {result['cuda'].get(key)}, "
                  f"ratio {result['ratio_gpuhal_to_cuda'].get(key)}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
