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
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

from compute.nv.compiler import find_nvcc

CTL_PATH = "/dev/nvidiactl"  # kernel-open/nvidia/nv.c: the control node the driver creates
SOURCE = pathlib.Path(__file__).resolve().parent / "nv_cuda_bench.cu"
BUILD_TIMEOUT_S = 180  # nvcc of one small file
RUN_TIMEOUT_S = 120  # 1000 launches and 10 copies of 256 MiB
FIGURES = ("launch_latency_us", "copy_in_MiB_s", "copy_out_MiB_s")


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

    report = selftest.run(device, timeout_s=timeout_s)
    ours = {key: report.figures.get(key) for key in FIGURES}
    cuda = cuda_figures()
    ratios = {}
    for key in FIGURES:
        if isinstance(ours.get(key), (int, float)) and isinstance(cuda.get(key), (int, float)) and cuda[key]:
            ratios[key] = round(ours[key] / cuda[key], 3)
    return {"device": device, "ok": report.ok, "selftest": report.as_json(), "gpuhal": ours,
            "cuda": cuda, "ratio_gpuhal_to_cuda": ratios}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.nv_hw_check", description=__doc__.split("\n")[0])
    parser.add_argument("device", nargs="?", default="nv:0", help="NVIDIA device string (default nv:0)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                        help="bound on each wait for the GPU (default: compute's)")
    args = parser.parse_args(argv)
    if not os.path.exists(CTL_PATH):
        print(f"nv_hw_check: {CTL_PATH} does not exist: no NVIDIA kernel driver is loaded here",
              file=sys.stderr)
        return 2
    result = check(args.device, args.timeout)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        from tools import selftest
        from tools.selftest import Report

        selftest_report = Report(result["device"], result["selftest"]["note"], result["selftest"]["checks"],
                                 result["selftest"]["figures"])
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
