"""ir3 (Adreno shader ISA): tables from autogen.qcom.ir3_isa, the assembler and the disassembler."""
