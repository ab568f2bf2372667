"""The mock GPU's RDNA3 (gfx1100) shader support: the instruction decoder and its LLVM-made tables."""
from mockgpu.amd.rdna3.decoder import Decoder, Instruction, Operand, UnknownInstruction, decode

__all__ = ["Decoder", "Instruction", "Operand", "UnknownInstruction", "decode"]
