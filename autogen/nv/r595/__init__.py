"""NVIDIA r595 (595.45.04, NVIDIA/open-gpu-kernel-modules) bindings: escapes, RM API, statuses, classes,
controls, UVM, method fields."""
