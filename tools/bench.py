"""`python -m tools.bench [--json] [NAME...]`: run the benchmarks each layer registers and print figures.

A layer registers a benchmark by owning a module with `NAME` and `run(**kwargs) -> dict[str, float]`;
this tool lists those modules below (imports only go downward, so the list lives at the top).
Benchmarks print figures and ratios against a baseline measured in the same run; nothing here
asserts a timing. With --json the output is one JSON list with an object per benchmark run:
{"name": NAME, "seconds": wall time of the run, "figures": {figure name: number}}.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time

# benchmark name -> module that defines run()
BENCHMARKS: dict[str, str] = {
    "hal": "hal.bench",
    "autogen": "autogen.bench",
    "vm": "drivers.vm.bench",
    "boot": "drivers.am.bench",
    "launch": "compute.bench",
    "copy": "compute.bench",
    "launch_nv": "compute.bench",  # the same benchmarks on the mock NVIDIA H100 ("mock:nv")
    "copy_nv": "compute.bench",
    "interp": "tools.interp_bench",
    "ptx": "tools.ptx_bench",
    "remote": "tools.remote_bench",
    "trace": "tools.trace_bench",
    "usb": "hal.usb.bench",
}

JSON_HELP = ('--json prints one JSON list, an object per benchmark run: {"name": the benchmark, "seconds": '
             'its wall time, "figures": {figure name: number}} (counts, seconds, rates per second, '
             'ratios)')
# the Navi31 register BAR (amdgpu maps its MMIO registers from BAR 5 on SOC21 parts)
MOCK_GPU_MMIO_BAR = 5


class _MockGPURegions:
    """Builds the hal benchmark's mock callback region: the mock GPU's MMIO BAR, opened through the
    sysfs backend like a real device (the mock is built here, above hal). Closes what it opened."""

    def __init__(self) -> None:
        self.opened = []

    def __call__(self):
        import hal
        from mockgpu import GPU_BDF, Machine

        machine = Machine.default()
        device = hal.open(f"pci:{GPU_BDF}", os=machine.os, unbind=True)
        self.opened.append(device)
        return device.bar(MOCK_GPU_MMIO_BAR)

    def close(self) -> None:
        while self.opened:
            self.opened.pop().close()


class _MockNavi31:
    """Builds, per call, a fresh default mock machine for the boot benchmark, with the synthetic
    Navi31 firmware set in a temporary root (drivers never import the mock). Closes what it made."""

    def __init__(self) -> None:
        import tempfile

        from mockgpu.amd.firmware_images import write_navi31_set

        self._scratch = tempfile.TemporaryDirectory(prefix="gpuhal-bench-")
        self.firmware_dir = str(write_navi31_set(f"{self._scratch.name}/firmware"))
        self.lock_dir = f"{self._scratch.name}/lock"
        os.mkdir(self.lock_dir)

    def __call__(self):
        from types import SimpleNamespace

        from mockgpu import GPU_BDF, Machine

        machine = Machine.default(lock_dir=self.lock_dir)
        return SimpleNamespace(seam=machine.os, device=f"pci:{GPU_BDF}", firmware_dir=self.firmware_dir)

    def close(self) -> None:
        self._scratch.cleanup()


class _MockUSB:
    """Opens the mock Navi31 behind an ASM24xx USB bridge (tools.mock_machines.navi31_usb) for the
    usb benchmark; with custom firmware the AM driver is brought up and its SDMA copies through the
    staging window (a stock-firmware boot writes megabytes as single TLPs: minutes in the mock)."""

    def __init__(self) -> None:
        self.closers = []

    def __call__(self, firmware: str):
        import hal
        from drivers.am.device import AMConfig, AMDevice
        from tools import mock_machines

        mock = mock_machines.navi31_usb(0, firmware=firmware)
        pci = hal.open(mock.device, os=mock.os)
        device = None
        copier = None
        if firmware == "custom":
            device = AMDevice(pci, config=AMConfig(firmware_dir=mock.firmware_dir))
            sdma = device.block("SDMA")
            target = device.memory.alloc_vram(8 << 20, purpose="usb benchmark")
            copier = (lambda data: sdma.copy_to_vram(target, data),
                      lambda size: sdma.copy_from_vram(target, size))

        def close() -> None:
            if device is not None:
                device.fini()
            pci.close()
            mock.close()

        return pci, copier, close

    def close(self) -> None:
        """Each run closes what it opened."""


class _MockComputeDevice:
    """Opens compute Devices on "mock:0" (the default mock Navi31) for the compute benchmarks, and
    holds or releases the mock's engines so they can time the driver without the model's work."""

    def __init__(self) -> None:
        from compute import device as compute_device
        from tools import mock_machines

        self._module = compute_device
        compute_device.register_mock_factory(mock_machines.navi31)

    def __call__(self):
        return self._module.Device("mock:0")

    @staticmethod
    def pause(device, held: bool) -> None:
        from mockgpu import GPU_BDF

        mec = device.backend.machine.machine.device(GPU_BDF).mec
        mec.stalled = held
        if not held:
            mec.kick()

    def close(self) -> None:
        self._module.register_mock_factory(None)


class _MockQCOMComputeDevice:
    """Opens compute Devices on "qcom:0" of a mock Adreno 630 (tools.mock_machines.qcom) for the
    launch benchmark's Adreno figures; the machine closes with the device. `owner.close` is left
    to the owner (the mock Navi31 factory this rides along with)."""

    def __init__(self, owner) -> None:
        self.owner = owner

    def __call__(self):
        from compute import device as compute_device
        from tools import mock_machines

        machine = mock_machines.qcom()
        device = compute_device.Device("qcom:0", os=machine.os)
        close = device.close

        def close_both() -> None:
            try:
                close()
            finally:
                machine.close()

        device.close = close_both
        return device


class _MockNVComputeDevice:
    """Opens compute Devices on "mock:nv" (a mock H100) for launch_nv/copy_nv; `pause` holds the
    mock GPU's fetching (mockgpu.nv.gpu.GPUModel.hold)."""

    def __init__(self) -> None:
        from compute import device as compute_device
        from tools import mock_machines

        self._module = compute_device
        compute_device.register_mock_factory(mock_machines.nvidia_compute, kind="nv")

    def __call__(self):
        return self._module.Device("mock:nv")

    @staticmethod
    def pause(device, held: bool) -> None:
        device.backend.machine.driver.gpu_model.hold(held)

    def close(self) -> None:
        self._module.register_mock_factory(None, kind="nv")


def run_benchmark(name: str) -> dict:
    module = importlib.import_module(BENCHMARKS[name])
    kwargs = {}
    mock_regions = None
    if name == "hal":
        mock_regions = _MockGPURegions()
        kwargs["mock_region_factory"] = mock_regions
    if name == "boot":
        mock_regions = _MockNavi31()
        kwargs["mock_gpu_factory"] = mock_regions
    if name == "usb":
        mock_regions = _MockUSB()
        kwargs["usb_factory"] = mock_regions
    if name in ("launch", "copy"):
        mock_regions = _MockComputeDevice()
        kwargs.update(device_factory=mock_regions, pause=mock_regions.pause, which=name)
        if name == "launch":
            kwargs["qcom_device_factory"] = _MockQCOMComputeDevice(mock_regions)
    if name in ("launch_nv", "copy_nv"):
        mock_regions = _MockNVComputeDevice()
        kwargs.update(device_factory=mock_regions, pause=mock_regions.pause, which=name[:-3])
    start = time.perf_counter()
    try:
        figures = module.run(**kwargs)
    finally:
        if mock_regions is not None:
            mock_regions.close()
    return {"name": name, "seconds": round(time.perf_counter() - start, 3), "figures": figures}


def _format(value) -> str:
    if isinstance(value, float):
        if value == 0 or 1e-3 <= abs(value) < 1e6:
            return f"{value:,.4g}"
        return f"{value:.4g}"
    return str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench", description=__doc__.splitlines()[0],
                                     epilog=JSON_HELP)
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"benchmarks to run (default: all of {', '.join(BENCHMARKS)})")
    parser.add_argument("--json", action="store_true",
                        help='print a JSON list: one {"name", "seconds", "figures"} object per benchmark')
    args = parser.parse_args(argv)
    names = args.names or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    results = []
    for name in names:
        if not args.json:
            print(f"== {name} ({platform.python_implementation()} {platform.python_version()}, {platform.machine()})", flush=True)
        result = run_benchmark(name)
        results.append(result)
        if not args.json:
            width = max(len(k) for k in result["figures"]) if result["figures"] else 0
            for key, value in result["figures"].items():
                print(f"  {key:<{width}}  {_format(value)}")
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
