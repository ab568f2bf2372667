"""The simulated USB bus: devices by port path, a transport per opened device, a link model in
simulated time and transfer faults.

`USBBus.open(path)` returns a `MockTransport`, a hal.usb.transport.USBTransport whose transfers a
`USBDeviceModel` (mockgpu.usb.asm24xx.ASM24xxModel) answers, so hal's bridge protocols and PCI
backend run unchanged on it.

Link model (`LinkModel`): one SuperSpeed Plus link, USB 3.2 Gen 2 (10 Gb/s signalling, 128b/132b
encoding: USB 3.2 r1.0 sec 6.3). Every transfer costs a fixed latency (host controller scheduling,
the device's response and, for control transfers, its three stages) and its bytes at the link's
bandwidth; the link carries one transfer's bytes at a time, but the latencies of transfers in
flight together overlap. Time is simulated: `clock_s` is what a benchmark reads, and nothing
sleeps. A synchronous transfer pays latency + bytes / bandwidth; N transfers in flight pay one
latency and N times their bytes.

Faults (`USBFaults`, armed on the bus): a STALL on the next transfer to an endpoint, a transfer
that never completes (the transport gives up at its timeout, in simulated time), a short bulk IN,
and unplugging the device (every later transfer fails with DeviceLost). `USBBus.requests` counts
every transfer and standard request the host started, refused ones included (a device known lost
should not be asked again).
"""
from __future__ import annotations

import dataclasses
import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from hal.errors import DeviceNotFound, HalError
from hal.usb.transport import (CONTROL, ENDPOINT_IN, DeviceIdentity, ShortTransfer, Transfer,
                               USBTransport, lost, stalled, timed_out)

log = logging.getLogger(__name__)

# USB 3.2 r1.0 sec 6.3: Gen 2 signals at 10 Gb/s with 128b/132b encoding
GEN2_SIGNAL_BITS_PER_S = 10_000_000_000
GEN2_PAYLOAD_BITS_PER_S = GEN2_SIGNAL_BITS_PER_S * 128 // 132
BITS_PER_BYTE = 8
# The model's choices (no published figure for the ASM2464 was at hand): a bulk transfer's
# round trip through the xHCI schedule and the bridge, and a control transfer's three stages
# handled by the bridge's 8051
BULK_LATENCY_S = 20e-6
CONTROL_LATENCY_S = 60e-6
SPEED_SUPERSPEED_PLUS_MBPS = 10_000


@dataclass
class LinkModel:
    """Simulated link time (see the module docstring)."""

    bytes_per_s: float = GEN2_PAYLOAD_BITS_PER_S / BITS_PER_BYTE
    bulk_latency_s: float = BULK_LATENCY_S
    control_latency_s: float = CONTROL_LATENCY_S
    clock_s: float = 0.0
    busy_until_s: float = 0.0
    bytes_moved: int = 0
    transfers: int = 0

    def schedule(self, transfer: Transfer, size: int, submitted_s: float) -> float:
        """When `transfer` of `size` payload bytes, submitted at `submitted_s`, completes."""
        latency = self.control_latency_s if transfer.kind == CONTROL else self.bulk_latency_s
        start = max(submitted_s + latency, self.busy_until_s)
        self.busy_until_s = start + size / self.bytes_per_s
        self.bytes_moved += size
        self.transfers += 1
        return self.busy_until_s

    def advance(self, until_s: float) -> None:
        self.clock_s = max(self.clock_s, until_s)


@dataclass
class USBFaults:
    """Armed misbehaviour: endpoint -> count for `stall` and `hang` (the next transfers to that
    endpoint, 0 = the control pipe), `short` endpoint -> bytes the next IN returns, `unplugged`."""

    stall: dict[int, int] = field(default_factory=dict)
    hang: dict[int, int] = field(default_factory=dict)
    short: dict[int, int] = field(default_factory=dict)
    unplugged: bool = False

    @staticmethod
    def take(table: dict[int, int], endpoint: int) -> bool:
        count = table.get(endpoint, 0)
        if not count:
            return False
        table[endpoint] = count - 1
        return True


class NotReady(Exception):
    """A device model's answer to an IN transfer whose data does not exist yet (UAS: the
    status of a command not yet received); the transport retries it after the others."""


class USBDeviceModel(ABC):
    """What a simulated USB device implements (mockgpu.usb.asm24xx.ASM24xxModel)."""

    identity: DeviceIdentity

    @abstractmethod
    def configuration_descriptor(self) -> bytes:
        """The configuration descriptor with its interfaces and endpoints."""

    @abstractmethod
    def set_interface(self, interface: int, alt_setting: int) -> None:
        """The host selected `alt_setting` of `interface`."""

    @abstractmethod
    def control(self, transfer: Transfer) -> bytes:
        """Answer a control transfer (IN: the data); raise TransferStall to refuse it."""

    @abstractmethod
    def bulk_out(self, transfer: Transfer) -> int:
        """Take an OUT transfer's data; returns the bytes accepted. NotReady to be asked later."""

    @abstractmethod
    def bulk_in(self, transfer: Transfer) -> bytes:
        """Data for an IN transfer; NotReady while none is ready."""

    def reset(self) -> None:
        """The host reset the device (after an unplug, at the next open)."""


class MockTransport(USBTransport):
    """A USBTransport over a simulated device (see the module docstring)."""

    name = "mock-usb"

    def __init__(self, bus: "USBBus", path: str, model: USBDeviceModel) -> None:
        self.bus = bus
        self.model = model
        self.identity = model.identity
        self.path = path
        self.closed = False
        self._pending: list[tuple[Transfer, float]] = []

    @property
    def link(self) -> LinkModel:
        return self.bus.link

    def configuration_descriptor(self) -> bytes:
        self._alive("reading the configuration descriptor")
        return self.model.configuration_descriptor()

    def set_interface(self, interface: int, alt_setting: int) -> None:
        self._alive("SET_INTERFACE")
        self.model.set_interface(interface, alt_setting)

    def clear_halt(self, endpoint: int) -> None:
        self._alive(f"clearing the halt of endpoint {endpoint:#04x}")

    def alloc_streams(self, endpoints: tuple[int, ...], count: int) -> int:
        self._alive("allocating bulk streams")
        return min(count, self.model.max_streams)

    def _alive(self, what: str) -> None:
        self.bus.requests += 1
        if self.closed:
            raise lost(self.path, f"{what} after close")
        if self.bus.faults.unplugged:
            raise lost(self.path, what)

    def _submit(self, transfer: Transfer) -> None:
        self.bus.requests += 1
        if self.closed or self.bus.faults.unplugged:
            self._alive(transfer.what())
        self._pending.append((transfer, self.link.clock_s))

    def _cancel(self, transfer: Transfer) -> None:
        self._pending = [(t, at) for t, at in self._pending if t is not transfer]

    def _reap(self, transfers: list[Transfer], timeout_s: float | None) -> None:
        progress = True
        while progress and any(not t.done for t in transfers):
            progress = False
            still = []
            for transfer, submitted in self._pending:
                if transfer.done:
                    continue
                if self._run(transfer, submitted, timeout_s):
                    progress = True
                else:
                    still.append((transfer, submitted))
            self._pending = still
        for transfer in transfers:
            if not transfer.done:
                # nothing will ever answer it: the host gives up at the timeout
                limit = transfer.timeout_s if timeout_s is None else min(timeout_s, transfer.timeout_s)
                self.link.advance(self.link.clock_s + limit)
                transfer.fail(timed_out(self.path, transfer))

    def _run(self, transfer: Transfer, submitted: float, timeout_s: float | None) -> bool:
        """Try to complete one transfer; False when the device has nothing for it yet."""
        faults = self.bus.faults
        if not (faults.unplugged or faults.hang or faults.stall or faults.short):
            return self._run_unfaulted(transfer, submitted)
        if faults.unplugged:
            transfer.fail(lost(self.path, transfer.what()))
            return True
        endpoint = transfer.endpoint
        if USBFaults.take(faults.hang, endpoint):
            limit = transfer.timeout_s if timeout_s is None else min(timeout_s, transfer.timeout_s)
            self.link.advance(self.link.clock_s + limit)
            transfer.fail(timed_out(self.path, transfer))
            log.info("%s: %s hung (injected)", self.path, transfer.what())
            return True
        bulk_in = transfer.kind != CONTROL and transfer.is_in
        if not bulk_in and USBFaults.take(faults.stall, endpoint):
            transfer.fail(stalled(self.path, transfer))
            return True
        try:
            if transfer.kind == CONTROL:
                result = self.model.control(transfer)
                size = len(result) if transfer.is_in else transfer.length
                transfer.complete(result if transfer.is_in else b"", size)
            elif transfer.is_in:
                result = self.model.bulk_in(transfer)
                if USBFaults.take(faults.stall, endpoint):
                    # the data was ready but the device halted the pipe instead of sending it
                    transfer.fail(stalled(self.path, transfer))
                    return True
                short = faults.short.pop(endpoint, None)
                if short is not None:
                    result = result[:short]
                size = len(result)
                transfer.complete(result)
            else:
                size = self.model.bulk_out(transfer)
                transfer.complete(b"", size)
        except NotReady:
            return False
        except ShortTransfer as exc:
            transfer.fail(exc)
            return True
        except Exception as exc:  # the model refused: a STALL on the wire
            from hal.errors import HalError
            if not isinstance(exc, HalError):
                raise
            transfer.fail(exc)
            return True
        done_at = self.link.schedule(transfer, size, submitted)
        self.link.advance(done_at)
        return True

    def _run_unfaulted(self, transfer: Transfer, submitted: float) -> bool:
        """`_run` with no fault armed: the same steps without looking for faults."""
        model = self.model
        try:
            if transfer.kind == CONTROL:
                result = model.control(transfer)
                size = len(result) if transfer.is_in else transfer.length
                transfer.complete(result if transfer.is_in else b"", size)
            elif transfer.endpoint & ENDPOINT_IN:
                result = model.bulk_in(transfer)
                size = len(result)
                transfer.complete(result)
            else:
                size = model.bulk_out(transfer)
                transfer.complete(b"", size)
        except NotReady:
            return False
        except HalError as exc:  # the model refused: a STALL on the wire (or a short transfer)
            transfer.fail(exc)
            return True
        link = self.bus.link
        link.advance(link.schedule(transfer, size, submitted))
        return True

    def link_time_s(self) -> float:
        return self.link.clock_s

    def close(self) -> None:
        self._pending = []
        self.closed = True
        self.bus.opened.discard(self.path)


class USBBus:
    """The machine's USB ports: `plug(path, model)`, `open(path)`, faults and the link clock."""

    def __init__(self) -> None:
        self.devices: dict[str, USBDeviceModel] = {}
        self.faults = USBFaults()
        self.link = LinkModel()
        self.opened: set[str] = set()
        self.requests = 0  # transfers and standard requests the host started, refused ones too

    def plug(self, path: str, model: USBDeviceModel) -> USBDeviceModel:
        """Connect `model` at port `path` ("BUS-PORT[.PORT...]"); the bus names it by that path."""
        model.identity = dataclasses.replace(model.identity, path=path)
        self.devices[path] = model
        return model

    def list(self) -> list[tuple[str, DeviceIdentity]]:
        if self.faults.unplugged:
            return []
        return [(path, model.identity) for path, model in sorted(self.devices.items())]

    def open(self, path: str) -> MockTransport:
        """Open the device at `path` (the host's libusb_open plus claiming its interface)."""
        model = self.devices.get(path)
        if model is None or self.faults.unplugged:
            known = ", ".join(sorted(self.devices)) or "none"
            raise DeviceNotFound(f"no USB device at {path} (devices: {known})")
        if path in self.opened:
            from hal.errors import DeviceBusy
            raise DeviceBusy(f"USB device {path}: interface 0 is claimed by another handle "
                             "(LIBUSB_ERROR_BUSY); close the other program")
        self.opened.add(path)
        return MockTransport(self, path, model)

    def unplug(self) -> None:
        """Every device on the bus is pulled out: in-flight and later transfers fail."""
        self.faults.unplugged = True
