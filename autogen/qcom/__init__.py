"""Generated Qualcomm Adreno bindings: KGSL uapi, a6xx registers, PM4 packets, the ir3 ISA tables."""
