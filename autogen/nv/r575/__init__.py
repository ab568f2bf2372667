"""NVIDIA r575 (575.64.05, NVIDIA/open-gpu-kernel-modules) bindings: escapes, RM API, statuses, classes,
controls, UVM, method fields."""
