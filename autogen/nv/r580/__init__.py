"""NVIDIA r580 (580.142, NVIDIA/open-gpu-kernel-modules) bindings: escapes, RM API, statuses, classes,
controls, UVM, method fields."""
