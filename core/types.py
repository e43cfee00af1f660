"""The values that flow from the collectors into the one ingest pipeline."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Reading:
    """One validated value of one metric of one device, at a time (epoch seconds, UTC)."""

    device: str
    room: str
    metric: str
    value: float
    unit: str
    time: float


class DeviceStatus(StrEnum):
    """What the collector last knew about a device."""

    ONLINE = "online"  # answered with valid data
    OFFLINE = "offline"  # silent: timeout, connection refused, MQTT availability says offline
    FAULTY = "faulty"  # answered, but with an error (Modbus exception reply, fault codes only)
    UNKNOWN = "unknown"  # nothing heard yet


class Reason(StrEnum):
    """Why a value was rejected. Counted per device and reason."""

    MALFORMED = "malformed"  # payload is not valid JSON / not decodable
    MISSING = "missing"  # the configured field is absent from the payload
    WRONG_TYPE = "wrong_type"  # a string where a number was expected, an object, ...
    UNMAPPED = "unmapped"  # a value not in the point's `map`
    NAN = "nan"  # NaN or infinity
    OUT_OF_RANGE = "out_of_range"  # outside the metric's physical range
    FAULT_CODE = "fault_code"  # a sensor fault sentinel such as 0x7FFF, 0xFFFF or -999
    BAD_TIME = "bad_time"  # the payload's timestamp cannot be read
    UNKNOWN_DEVICE = "unknown_device"  # a wildcard topic yielded no usable device id
    TOO_MANY_DEVICES = "too_many_devices"  # a wildcard entry already stands for its max_devices
    READ_ERROR = "read_error"  # a Modbus read failed (exception reply or timeout)


@dataclass(frozen=True, slots=True)
class Rejection:
    """A value that did not become a reading, with the device, the metric (if known) and why.

    ``key`` identifies the message it came from across redeliveries (MQTT: packet id, topic and payload),
    and ``redelivered`` says the broker marked it a redelivery (DUP): a redelivered message whose key was
    counted before is not counted again. None / False where nothing is redelivered.
    """

    device: str
    metric: str | None
    reason: Reason
    detail: str
    time: float
    key: str | None = None
    redelivered: bool = False


Ack = Callable[[], None]


class Sink(Protocol):
    """Where collectors hand what they read. Implemented by the ingest pipeline; thread-safe."""

    def submit(
        self, readings: Sequence[Reading], rejections: Sequence[Rejection] = (), *, ack: Ack | None = None
    ) -> None:
        """Accept one message's (or poll's) validated readings and rejected values.

        ``ack`` is called, from another thread, once all of them are durably stored (readings committed,
        rejections counted): an MQTT collector acknowledges the message to the broker only then.
        """
        ...

    def reject(self, rejection: Rejection) -> None:
        """Record a value that was not accepted."""
        ...

    def status(self, device: str, status: DeviceStatus, error: str | None, time: float) -> None:
        """Record what a collector now knows of a device's health."""
        ...
