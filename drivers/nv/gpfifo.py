"""GPFIFO submission: pushbuffer method headers, GP entries, and the ring a channel fetches from.

A channel's work is a ring of GP entries (`GPFIFO_ENTRIES` of 8 bytes, in GPU memory the channel
was allocated with). Each entry points to a pushbuffer segment in GPU VA: a run of method headers
and their data words. The CPU writes the segment and the entry, then advances GPPut in the
channel's USERD (Nvc86fControl_struct) and writes the channel's work-submit token to the usermode
object's NOTIFY_CHANNEL_PENDING doorbell (clc361.h); the host engine (PBDMA) fetches entries up to
GPPut and moves GPGet.

Method headers (clc56f.h "dma method formats"; clc86f.h has the same layout):
  bits 31:29 SEC_OP (1 incrementing, 3 non-incrementing, 4 immediate data, 5 increment once),
  bits 28:16 COUNT (or 13 bits of immediate data), bits 15:13 SUBCHANNEL, bits 11:0 the method's
  dword address (the class headers give byte offsets: method >> 2).
Methods below 0x100 (bytes) are host methods (semaphores, WFI, MEM_OP) whatever the subchannel;
the rest go to the class bound on the subchannel by SET_OBJECT.

A GP entry (clc56f.h / clc86f.h GP_ENTRY0/1): word 0 holds the segment address bits 31:2 (bit 0
FETCH), word 1 bits 7:0 the address bits 39:32, bits 30:10 the length in dwords, bit 9 LEVEL, bit
31 SYNC. Pushbuffers must therefore lie below 2**40.

Ring and pushbuffer space are reclaimed only once the device timeline passed the submission that
used them (`compute.queue.RingSpace` in the compute layer; `GPFIFO` here only counts).
"""
from __future__ import annotations

import dataclasses
import struct

from autogen.nv.r535 import classes as cl
from autogen.nv.r535 import fields
from hal.errors import HalError, InvalidArgument
from hal.region import Region

# clc56f.h dma method formats, from the generated bit ranges (autogen.nv.r535.fields)
_ADDRESS = fields.FIELDS["NVC56F_DMA_METHOD_ADDRESS"]
_SUBCHANNEL = fields.FIELDS["NVC56F_DMA_METHOD_SUBCHANNEL"]
_COUNT = fields.FIELDS["NVC56F_DMA_METHOD_COUNT"]
_IMMEDIATE = fields.FIELDS["NVC56F_DMA_IMMD_DATA"]
_SEC_OP = fields.FIELDS["NVC56F_DMA_SEC_OP"]


def _mask(field: tuple[int, int]) -> int:
    return (1 << (field[0] - field[1] + 1)) - 1


METHOD_ADDRESS_MASK = _mask(_ADDRESS)
SUBCHANNEL_SHIFT = _SUBCHANNEL[1]
SUBCHANNEL_MASK = _mask(_SUBCHANNEL)
COUNT_SHIFT = _COUNT[1]
COUNT_MASK = _mask(_COUNT)
IMMEDIATE_MASK = _mask(_IMMEDIATE)
SEC_OP_SHIFT = _SEC_OP[1]
SEC_OP_INC = cl.NVC56F_DMA_SEC_OP_INC_METHOD
SEC_OP_NON_INC = cl.NVC56F_DMA_SEC_OP_NON_INC_METHOD
SEC_OP_IMMEDIATE = cl.NVC56F_DMA_SEC_OP_IMMD_DATA_METHOD
SEC_OP_ONE_INC = cl.NVC56F_DMA_SEC_OP_ONE_INC
SEC_OP_END_SEGMENT = cl.NVC56F_DMA_SEC_OP_END_PB_SEGMENT
HOST_METHOD_LIMIT = 0x100  # methods below this byte offset belong to the host class (clc56f.h: 0x0-0xfc)

# clc56f.h GP entry fields (generated)
GP_ENTRY_SIZE = cl.NVC86F_GP_ENTRY__SIZE
GP_ENTRY1_LENGTH_SHIFT = fields.FIELDS["NVC56F_GP_ENTRY1_LENGTH"][1]
GP_ENTRY1_LENGTH_MASK = _mask(fields.FIELDS["NVC56F_GP_ENTRY1_LENGTH"])
GP_ENTRY1_GET_HI_MASK = _mask(fields.FIELDS["NVC56F_GP_ENTRY1_GET_HI"])
GP_ENTRY1_LEVEL_SHIFT = fields.FIELDS["NVC56F_GP_ENTRY1_LEVEL"][1]
GP_ENTRY_ADDRESS_LIMIT = 1 << 40  # GET 31:2 + GET_HI 7:0

# clc86f.h Nvc86fControl_struct (USERD): GPGet at 0x88, GPPut at 0x8c, from the generated layout
_USERD_FIELDS = {name: offset for name, offset, _ in cl.Nvc86fControl_struct.LAYOUT}
USERD_GP_GET = _USERD_FIELDS["GPGet"]
USERD_GP_PUT = _USERD_FIELDS["GPPut"]

# subchannels the engine objects are bound to (any of 0..7 works; tinygrad's ops_nv.py uses 1 for
# compute and 4 for copy, and so does this driver)
SUBCHANNEL_COMPUTE = 1
SUBCHANNEL_COPY = 4


class ChannelError(HalError):
    """The RM stopped a channel group (robust-channel recovery) and wrote its channels' error
    notifiers: `name` is the nverror.h code's name (ROBUST_CHANNEL_FIFO_ERROR_MMU_ERR_FLT, ...),
    `code` its number, `info` the notifier's info16 (the NV2080 engine type that raised it),
    `reported_by` the channels whose notifiers hold it (every channel of the group for a TSG-wide
    error) and `engine` the channel whose engine that is, when one of ours runs on it (else "")."""

    def __init__(self, name: str, code: int, info: int, message: str,
                 reported_by: tuple[str, ...] = (), engine: str = "") -> None:
        super().__init__(message)
        self.name = name
        self.code = code
        self.info = info
        self.reported_by = reported_by
        self.engine = engine


def method_header(sec_op: int, subchannel: int, method: int, count: int) -> int:
    """A method header word: `method` is the class header's byte offset."""
    if method % 4 or not 0 <= method >> 2 <= METHOD_ADDRESS_MASK:
        limit = METHOD_ADDRESS_MASK << 2
        raise InvalidArgument(f"method {method:#x} is not a dword offset below {limit:#x}")
    if not 0 <= subchannel <= SUBCHANNEL_MASK:
        raise InvalidArgument(f"subchannel {subchannel} is not 0..7")
    if not 0 <= count <= COUNT_MASK:
        raise InvalidArgument(f"method count {count} does not fit 13 bits")
    return sec_op << SEC_OP_SHIFT | count << COUNT_SHIFT | subchannel << SUBCHANNEL_SHIFT | method >> 2


def incrementing(subchannel: int, method: int, *data: int) -> list[int]:
    """`data` to `method`, `method + 4`, ... (NVC56F_DMA_INCR)."""
    return [method_header(SEC_OP_INC, subchannel, method, len(data)), *(d & 0xFFFFFFFF for d in data)]


def non_incrementing(subchannel: int, method: int, *data: int) -> list[int]:
    """Every word of `data` to the same `method` (NVC56F_DMA_NONINCR)."""
    return [method_header(SEC_OP_NON_INC, subchannel, method, len(data)), *(d & 0xFFFFFFFF for d in data)]


def one_increment(subchannel: int, method: int, *data: int) -> list[int]:
    """The first word to `method`, the rest to `method + 4` (NVC56F_DMA_ONEINCR)."""
    return [method_header(SEC_OP_ONE_INC, subchannel, method, len(data)), *(d & 0xFFFFFFFF for d in data)]


def immediate(subchannel: int, method: int, value: int) -> list[int]:
    """A 13-bit `value` inside the header itself (NVC56F_DMA_IMMD_DATA)."""
    if not 0 <= value <= IMMEDIATE_MASK:
        raise InvalidArgument(f"immediate data {value:#x} does not fit 13 bits")
    return [method_header(SEC_OP_IMMEDIATE, subchannel, method, value)]


@dataclasses.dataclass(frozen=True)
class MethodHeader:
    sec_op: int
    subchannel: int
    method: int  # byte offset
    count: int  # data words that follow (0 for immediate data)
    immediate: int | None


def decode_header(word: int) -> MethodHeader:
    """The fields of a header word (the mock GPU's decoder uses this layout too)."""
    sec_op = word >> SEC_OP_SHIFT
    subchannel = (word >> SUBCHANNEL_SHIFT) & SUBCHANNEL_MASK
    method = (word & METHOD_ADDRESS_MASK) << 2
    field = (word >> COUNT_SHIFT) & COUNT_MASK
    if sec_op == SEC_OP_IMMEDIATE:
        return MethodHeader(sec_op, subchannel, method, 0, field)
    return MethodHeader(sec_op, subchannel, method, field, None)


def gp_entry(address: int, dwords: int) -> tuple[int, int]:
    """The two words of a GP entry for a main-level segment of `dwords` at `address`."""
    if address % 4 or not 0 < address < GP_ENTRY_ADDRESS_LIMIT:
        raise InvalidArgument(f"pushbuffer at {address:#x}: a GP entry addresses 4-byte aligned "
                              f"segments below {GP_ENTRY_ADDRESS_LIMIT:#x}")
    if not 0 < dwords <= GP_ENTRY1_LENGTH_MASK:
        raise InvalidArgument(f"pushbuffer segment of {dwords} dwords (1..{GP_ENTRY1_LENGTH_MASK})")
    word0 = address & 0xFFFFFFFC
    word1 = (address >> 32) & GP_ENTRY1_GET_HI_MASK | dwords << GP_ENTRY1_LENGTH_SHIFT
    return word0, word1


def decode_gp_entry(word0: int, word1: int) -> tuple[int, int]:
    """(segment address, dwords) of a GP entry."""
    address = (word0 & 0xFFFFFFFC) | (word1 & GP_ENTRY1_GET_HI_MASK) << 32
    return address, (word1 >> GP_ENTRY1_LENGTH_SHIFT) & GP_ENTRY1_LENGTH_MASK


class GPFIFO:
    """The CPU side of one channel's GP ring: `ring` (CPU view of the entries), `userd` (CPU view of
    the USERD block), `doorbell` (the usermode window) and the channel's work-submit token."""

    def __init__(self, name: str, ring: Region, entries: int, userd: Region, doorbell: Region,
                 token: int) -> None:
        if entries & (entries - 1):
            raise InvalidArgument(f"{name}: {entries} GP entries is not a power of two")
        self.name = name
        self.ring = ring
        self.entries = entries
        self.userd = userd
        self.doorbell = doorbell
        self.token = token
        self.put = 0  # monotonic count of entries written

    def push(self, address: int, dwords: int) -> int:
        """Queue the segment at GPU `address` and ring the doorbell; returns the monotonic put.
        The caller has made sure the entry it overwrites was consumed (by the timeline)."""
        word0, word1 = gp_entry(address, dwords)
        slot = self.put % self.entries
        self.ring.write(slot * GP_ENTRY_SIZE, struct.pack("<II", word0, word1))
        self.put += 1
        # the entry is in memory before GPPut moves (the mapping is uncached/write-combined on
        # hardware; the order of these stores is what the PBDMA relies on)
        self.userd.write32(USERD_GP_PUT, self.put % self.entries)
        self.doorbell.write32(cl.NVC361_NOTIFY_CHANNEL_PENDING, self.token)
        return self.put

    @property
    def get(self) -> int:
        """GPGet as the host engine last wrote it (an index into the ring)."""
        return self.userd.read32(USERD_GP_GET)

    def state(self) -> str:
        return (f"{self.name} GPFIFO: GPPut {self.put % self.entries} (written {self.put}), "
                f"GPGet {self.get}, {self.entries} entries")
