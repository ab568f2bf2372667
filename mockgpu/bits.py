"""Bit-field helpers shared by the device models: place and extract a field given only its mask.

Register definitions come from generated headers as masks (PCI_EXP_LNKCAP_MLW = 0x3f0); these
helpers derive the shift from the mask, so no model writes a shift count by hand.
"""
from __future__ import annotations


def mask_shift(mask: int) -> int:
    """Bit position of the lowest set bit of `mask`."""
    if mask <= 0:
        raise ValueError(f"field mask must be positive, got {mask:#x}")
    return (mask & -mask).bit_length() - 1


def field_get(value: int, mask: int) -> int:
    """The field selected by `mask`, shifted down to bit 0."""
    return (value & mask) >> mask_shift(mask)


def field_put(mask: int, field: int) -> int:
    """`field` shifted into the position selected by `mask`; raises if it does not fit."""
    shifted = field << mask_shift(mask)
    if shifted & ~mask:
        raise ValueError(f"value {field:#x} does not fit field mask {mask:#x}")
    return shifted


def all_ones(nbytes: int) -> int:
    """The value a master-aborted read of `nbytes` returns (every bit set)."""
    return (1 << (8 * nbytes)) - 1
