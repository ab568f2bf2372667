"""The `remote` benchmark: MMIO round trips and copy throughput through tools.gpu_server, over a
Unix socket and loopback TCP, against the same mock GPU opened directly in the same run.

Figures: `<path>_mmio_reads_per_s` (32-bit register reads, each a round trip through a socket),
`<path>_posted_writes_per_s` (32-bit writes, no round trip, drained by one read at the end),
`<path>_posted_writes_issued_per_s` (the same writes as the caller sees them: batched records
leave without waiting for the server) and `<path>_dma_copy_mb_per_s` (a DMA buffer written and read back in 1 MiB pieces: shared memory over
the Unix socket, SYSMEM copies over TCP), for path = direct, unix, tcp; and the slowdown of each
socket path against direct. Nothing is asserted.
"""
from __future__ import annotations

import tempfile
import time

NAME = "remote"
MMIO_BAR = 5  # the Navi31 register BAR (SOC21 parts map their registers from BAR 5)
READS = 2000
WRITES = 5000
COPY_BYTES = 1 << 20
COPY_ROUNDS = 8
TOKEN = b"bench-token"
SCRATCH_REGISTER = 0  # a register offset read by every path (BAR5 offset 0)


def _measure(pci) -> dict[str, float]:
    bar = pci.bar(MMIO_BAR)
    start = time.perf_counter()
    for _ in range(READS):
        bar.read32(SCRATCH_REGISTER)
    reads = READS / (time.perf_counter() - start)
    value = bar.read32(SCRATCH_REGISTER)
    start = time.perf_counter()
    for _ in range(WRITES):
        bar.write32(SCRATCH_REGISTER, value)
    issued = WRITES / (time.perf_counter() - start)
    bar.read32(SCRATCH_REGISTER)  # every posted write is carried out before this answer
    writes = WRITES / (time.perf_counter() - start)
    buffer = pci.alloc_dma(COPY_BYTES)
    data = bytes(range(256)) * (COPY_BYTES // 256)
    start = time.perf_counter()
    for _ in range(COPY_ROUNDS):
        buffer.region.write(0, data)
        if buffer.region.read(0, COPY_BYTES) != data:
            raise AssertionError("a DMA buffer did not read back what was written")
    copy = 2 * COPY_ROUNDS * COPY_BYTES / (time.perf_counter() - start) / 1e6
    pci.free_dma(buffer)
    return {"mmio_reads_per_s": reads, "posted_writes_per_s": writes, "posted_writes_issued_per_s": issued,
            "dma_copy_mb_per_s": copy}


def run(**_) -> dict[str, float]:
    import hal
    from tools import gpu_server, mock_machines

    figures: dict[str, float] = {}
    direct = mock_machines.navi31()
    try:
        with hal.open(direct.device, os=direct.os, unbind=True) as pci:
            for key, value in _measure(pci).items():
                figures[f"direct_{key}"] = value
    finally:
        direct.close()
    with tempfile.TemporaryDirectory(prefix="gpuhal-remote-bench-") as scratch:
        for path, listen, token in (("unix", f"unix:{scratch}/gpu.sock", None),
                                    ("tcp", "tcp:127.0.0.1:0", TOKEN)):
            served = gpu_server.serve(listen=listen, mock=True, token=token)
            try:
                from hal.remote.client import open_remote

                with open_remote(served.target, token=token) as pci:
                    for key, value in _measure(pci).items():
                        figures[f"{path}_{key}"] = value
            finally:
                served.close()
    for path in ("unix", "tcp"):
        figures[f"{path}_mmio_read_slowdown_x"] = (figures["direct_mmio_reads_per_s"]
                                                  / figures[f"{path}_mmio_reads_per_s"])
    return {key: round(value, 3) for key, value in figures.items()}
