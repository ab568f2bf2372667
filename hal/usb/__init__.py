"""The usb: backend: GPUs behind ASMedia ASM24xx USB-to-PCIe bridges.

`transport` is the USB seam (control and bulk transfers, sync and async), `libusb` its real
implementation (python-libusb1, optional extra `usb`), `asm24xx` the bridge's two firmware
personalities, `backend` the PCIBackend on top, `bench` the copy throughput benchmark.
"""
