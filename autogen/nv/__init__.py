"""NVIDIA bindings generated from the open GPU kernel modules, one package per RM branch."""
