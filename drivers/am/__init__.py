"""The AM driver: an RDNA3 GPU driven from user space through hal, one module per IP block."""
