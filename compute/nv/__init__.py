"""NVIDIA side of the compute layer: the CUDA C kernel library, its compiler wrapper and build script."""
