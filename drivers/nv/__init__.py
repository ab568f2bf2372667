"""NVIDIA driver: the kernel driver's RM and UVM ioctls (objects, memory, channels) and program
binaries (cubin, fatbinary). See docs/nv.md."""
