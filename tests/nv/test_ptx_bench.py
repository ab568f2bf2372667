"""The `ptx` benchmark runs (small sizes), checks its kernels and reports its figures; the
interpreter counts thread-instructions."""
from __future__ import annotations

from tools import bench, ptx_bench


def test_ptx_benchmark_reports_figures() -> None:
    figures = ptx_bench.run(vector_add_n=1000, matmul_size=20)
    assert figures["vector_add_elements"] == 1000
    assert figures["vector_add_thread_instructions_per_s"] > 0
    assert figures["matmul_thread_instructions_per_s"] > 0
    assert bench.BENCHMARKS["ptx"] == "tools.ptx_bench"


def test_thread_instructions_count_each_thread_at_each_instruction() -> None:
    from mockgpu.nv.ptx import FlatMemory, Kernel

    text = (".version 8.0\n.target sm_80\n.address_size 64\n.visible .entry k()\n{\n"
            ".reg .b32 %r<3>;\n.reg .pred %p<2>;\nmov.u32 %r1, %tid.x;\nsetp.lt.u32 %p1, %r1, 10;\n"
            "@%p1 bra DONE;\nadd.u32 %r2, %r1, 1;\nDONE:\nret;\n}\n")
    kernel = Kernel.from_ptx(text, "k")
    steps = kernel.run((2,), (32,), b"", FlatMemory(0, 16))
    # Per CTA: mov, setp, bra and ret for all 32 threads, add for the 22 that did not branch.
    assert kernel.thread_instructions == 2 * (4 * 32 + 22)
    assert steps == 2 * 5
