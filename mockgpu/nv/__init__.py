"""Mock NVIDIA: a fake kernel driver (/dev/nvidiactl, /dev/nvidiaN, /dev/nvidia-uvm) answering the
RM/UVM ioctls with the real ABI, and a PTX interpreter that runs the kernels' PTX. See docs/nv.md."""
