"""The AMD backend of the compute layer: HSA code objects, the kernel library and its compiler."""
