"""The `usb` benchmark: copy throughput through an ASM24xx bridge in link time.

Registered with `python -m tools.bench` as NAME; tools.bench hands in `usb_factory`, which opens a
device behind a (mock) bridge: `usb_factory(firmware) -> (pci, vram_copier or None, close)`, where
`vram_copier` is (copy_in(data), copy_out(size)) through the AM driver's SDMA and staging window.
Times are the transport's link clock (`USBTransport.link_time_s`: simulated for the mock, whose link
is USB 3.2 Gen 2, 10 Gb/s), so the figures are what the protocol costs on the wire, not Python's
speed. Figures, in MB/s (10^6 bytes per second):
- `<firmware>_sram_in`, `_sram_out`: host <-> bridge SRAM window, the window filled (drained) as
  one DMA (custom: one F2 arm and one bulk transfer; stock: WRITE(16)/READ(16) of 16 KiB, up to 16
  UAS commands in flight);
- `custom_vram_in`, `_vram_out`: host <-> VRAM through the staging window and SDMA (each chunk:
  window DMA, SDMA packets and doorbell as posted TLPs, a fence poll);
- `link_payload`: what the link can carry at most; `sram_in_fraction` the custom window fill over it.
No figure is asserted.
"""
from __future__ import annotations

import os
from typing import Callable

NAME = "usb"
MEGA = 1_000_000
VRAM_BYTES = 4 << 20  # host <-> VRAM copy size per direction
SRAM_ROUNDS = 8  # window fills (drains) per measurement


def _rate(size: int, seconds: float) -> float:
    return size / seconds / MEGA if seconds > 0 else float("inf")


def _sram_figures(pci, prefix: str) -> dict[str, float]:
    bridge = pci.backend.bridge
    transport = bridge.transport
    window = bridge.sram_size
    data = os.urandom(window)
    start = transport.link_time_s()
    for _ in range(SRAM_ROUNDS):
        bridge.sram_write(0, data)
    bridge.flush()  # the last write may still be in flight
    write_s = transport.link_time_s() - start
    start = transport.link_time_s()
    for _ in range(SRAM_ROUNDS):
        back = bridge.sram_read(0, window)
    read_s = transport.link_time_s() - start
    if back != data:
        raise AssertionError("the SRAM window did not read back what was written")
    return {f"{prefix}_sram_in": _rate(window * SRAM_ROUNDS, write_s),
            f"{prefix}_sram_out": _rate(window * SRAM_ROUNDS, read_s)}


def run(usb_factory: Callable | None = None) -> dict[str, float]:
    if usb_factory is None:
        raise ValueError("the usb benchmark needs a usb_factory (python -m tools.bench usb provides one)")
    figures: dict[str, float] = {}
    for firmware in ("custom", "stock"):
        pci, copier, close = usb_factory(firmware)
        try:
            figures.update(_sram_figures(pci, firmware))
            transport = pci.backend.bridge.transport
            if copier is not None:
                copy_in, copy_out = copier
                data = os.urandom(VRAM_BYTES)
                start = transport.link_time_s()
                copy_in(data)
                figures[f"{firmware}_vram_in"] = _rate(VRAM_BYTES, transport.link_time_s() - start)
                start = transport.link_time_s()
                back = copy_out(VRAM_BYTES)
                figures[f"{firmware}_vram_out"] = _rate(VRAM_BYTES, transport.link_time_s() - start)
                if back != data:
                    raise AssertionError("VRAM did not read back what was copied in")
            bytes_per_s = getattr(getattr(transport, "link", None), "bytes_per_s", None)
            if bytes_per_s:
                figures["link_payload"] = bytes_per_s / MEGA
        finally:
            close()
    if "link_payload" in figures:
        figures["sram_in_fraction"] = figures["custom_sram_in"] / figures["link_payload"]
    return figures
