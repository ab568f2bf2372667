"""The SMN (system management network) address space of the mock AMD GPU and its RSMU window.

amdgpu reaches SMN addresses that have no MMIO alias through NBIO's index/data pair: it writes the
SMN address to RSMU_INDEX, reads the index back (posting the write) and reads or writes RSMU_DATA
(amdgpu_device.c amdgpu_device_indirect_rreg / _wreg with nbio_v4_3.c
nbio_v4_3_get_pcie_index_offset / _get_pcie_data_offset: regBIF_BX_PF0_RSMU_INDEX / _DATA).

Models own SMN addresses with `own(address, read=, write=)`. Every other address is the register
space: amdgpu reaches MMIO registers past the end of BAR5 through the same pair with the register's
byte address as the SMN address (amdgpu_device.c amdgpu_device_rreg: `adev->pcie_rreg(adev, reg * 4)`,
soc21.c soc21_common_early_init: pcie_rreg = amdgpu_device_indirect_rreg), so those go to the
register file (its hooks, its strict-mode record, and plain read-back storage elsewhere).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from mockgpu.amd.regfile import REGISTER_BYTES, WORD_MASK

if TYPE_CHECKING:
    from mockgpu.amd.gpu import Navi31GPU

ReadHook = Callable[[], int]
WriteHook = Callable[[int], None]


class SMNSpace:
    """SMN addresses behind the RSMU_INDEX/RSMU_DATA window of NBIO (see the module docstring)."""

    def __init__(self, gpu: "Navi31GPU") -> None:
        self.gpu = gpu
        self._reads: dict[int, ReadHook] = {}
        self._writes: dict[int, WriteHook] = {}
        self._index = gpu.regfile.own("NBIO", "regBIF_BX_PF0_RSMU_INDEX")
        self._data = gpu.regfile.own("NBIO", "regBIF_BX_PF0_RSMU_DATA", read=self._data_read,
                                     write=self._data_write)

    def own(self, address: int, read: ReadHook | None = None, write: WriteHook | None = None) -> None:
        """Give a model the SMN address `address`: reads call `read()`, writes call `write(value)`."""
        if read is not None:
            self._reads[address] = read
        if write is not None:
            self._writes[address] = write

    def read(self, address: int) -> int:
        hook = self._reads.get(address)
        if hook is not None:
            return hook() & WORD_MASK
        address &= ~(REGISTER_BYTES - 1)
        if address == self._data:
            return 0  # the window does not reach itself
        return self.gpu.regfile.read32(address)

    def write(self, address: int, value: int) -> None:
        value &= WORD_MASK
        hook = self._writes.get(address)
        if hook is not None:
            hook(value)
            return
        address &= ~(REGISTER_BYTES - 1)
        if address != self._data:
            self.gpu.regfile.write32(address, value)

    def reset(self, kind: str) -> None:
        """Any reset: nothing of its own to clear (the register file returns to its power-on values
        with the function; owned addresses answer from their models)."""

    def _data_read(self) -> int:
        return self.read(self.gpu.regfile.peek(self._index))

    def _data_write(self, value: int) -> None:
        self.write(self.gpu.regfile.peek(self._index), value)
