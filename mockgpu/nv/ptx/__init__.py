"""The mock NVIDIA GPU's PTX interpreter: parses the PTX that a fatbinary carries beside the SASS
(which no mock can run) and executes a kernel over a grid, numpy-vectorised over each CTA's threads.

    kernel = Kernel.from_ptx(ptx_text, "vector_add_f32")
    kernel.run(grid=(blocks,), block=(256,), params=kernel.pack_params(a, b, c, n), memory=memory)

`memory` is global memory: any object with read(address, size) -> bytes and write(address, data).
"""
from mockgpu.nv.ptx.interpreter import (BarrierDivergence, FlatMemory, Kernel, Memory, MemoryFault,
                                        UnsupportedInstruction)
from mockgpu.nv.ptx.parser import PTXSyntaxError, parse_module

__all__ = ["BarrierDivergence", "FlatMemory", "Kernel", "Memory", "MemoryFault", "PTXSyntaxError",
           "UnsupportedInstruction", "parse_module"]
