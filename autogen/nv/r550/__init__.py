"""NVIDIA r550 (550.163.01, NVIDIA/open-gpu-kernel-modules) bindings: escapes, RM API, statuses, classes,
controls, UVM, method fields."""
