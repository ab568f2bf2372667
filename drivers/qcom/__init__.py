"""Qualcomm Adreno (KGSL) driver: the ir3 shader assembler and kernels; the device and submission code."""
