"""Generated Linux uapi bindings from linux-libc-dev: vfio, pci_regs, kfd_ioctl.

Regenerate with `python -m autogen linux`; see docs/autogen.md.
"""
