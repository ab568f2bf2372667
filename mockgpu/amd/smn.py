"""The SMN (system management network) address space of the mock AMD GPU and its RSMU window.

amdgpu reaches SMN addresses that have no MMIO alias through NBIO's index/data pair: it writes the
SMN address to RSMU_INDEX, reads the index back (posting the write) and reads or writes RSMU_DATA
(amdgpu_device.c amdgpu_device_indirect_rreg / _wreg with nbio_v4_3.c
nbio_v4_3_get_pcie_index_offset / _get_pcie_data_offset: regBIF_BX_PF0_RSMU_INDEX / _DATA).

Models own SMN addresses with `own(address, read=, write=)`; an address no model owns reads back
what was last written there (zero at power-on), like the register file.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from mockgpu.amd.regfile import WORD_MASK

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
        self._stored: dict[int, int] = {}
        self._index = gpu.regfile.own("NBIO", "regBIF_BX_PF0_RSMU_INDEX")
        gpu.regfile.own("NBIO", "regBIF_BX_PF0_RSMU_DATA", read=self._data_read, write=self._data_write)

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
        return self._stored.get(address, 0)

    def write(self, address: int, value: int) -> None:
        value &= WORD_MASK
        hook = self._writes.get(address)
        if hook is not None:
            hook(value)
            return
        self._stored[address] = value

    def reset(self, kind: str) -> None:
        """Any reset: plain SMN storage back to zero (owned addresses answer from their models)."""
        self._stored.clear()

    def _data_read(self) -> int:
        return self.read(self.gpu.regfile.peek(self._index))

    def _data_write(self, value: int) -> None:
        self.write(self.gpu.regfile.peek(self._index), value)
