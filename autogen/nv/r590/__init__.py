"""NVIDIA r590 (590.48.01, NVIDIA/open-gpu-kernel-modules) bindings: escapes, RM API, statuses, classes,
controls, UVM, method fields."""
