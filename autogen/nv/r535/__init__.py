"""NVIDIA r535 (535.261.03) bindings: escapes, RM API, statuses, classes, controls, UVM."""
