"""GPU memory code shared by the AMD and NVIDIA drivers: the TLSF physical allocator (tlsf), the
multi-level page-table builder (pagetable) and the per-generation entry formats (amd_gfx11)."""
