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
    BAD_TIME = "bad_time"  # the payload's time cannot be read, or is too far ahead or too old
    UNKNOWN_DEVICE = "unknown_device"  # a wildcard topic yielded no usable device id
    TOO_MANY_DEVICES = "too_many_devices"  # a wildcard entry already stands for its max_devices
    READ_ERROR = "read_error"  # a Modbus read failed (exception reply or timeout)
    DROPPED = "dropped"  # a polled reading dropped: the store was unavailable and max_pending was reached
    DUPLICATE = "duplicate"  # the same value at the same time again, from another message: stored once


@dataclass(frozen=True, slots=True)
class Rejection:
    """Values that did not become readings: the device, the metric (if known), why, and how many.

    ``count`` is 1 for one rejected value; the pipeline folds rejections of the same device, metric and
    reason into one while they wait to be stored, so that a long outage of the store keeps one entry
    per kind of rejection, not one per value.
    """

    device: str
    metric: str | None
    reason: Reason
    detail: str
    time: float
    count: int = 1


@dataclass(frozen=True, slots=True)
class Delivery:
    """Which MQTT message brought a submission: its packet id, a digest of its topic and payload, and
    whether the broker marked it a redelivery (DUP).

    A message is stored once: the store remembers, with what it carried and in the same transaction,
    the digest of the latest message of each packet id, and a redelivery whose packet id and digest it
    remembers is the same message again (packet ids are reused only once the broker has the message's
    acknowledgement, so the latest one per id is the only one that can come back).
    """

    mid: int
    digest: int
    redelivered: bool


Ack = Callable[[], None]


class Sink(Protocol):
    """Where collectors hand what they read. Implemented by the ingest pipeline; thread-safe."""

    def submit(
        self,
        readings: Sequence[Reading],
        rejections: Sequence[Rejection] = (),
        *,
        ack: Ack | None = None,
        delivery: Delivery | None = None,
    ) -> None:
        """Accept one message's (or poll's) validated readings and rejected values.

        ``ack`` is called, from another thread, once all of them are durably stored (readings committed,
        rejections counted): an MQTT collector acknowledges the message to the broker only then.
        ``delivery`` names the MQTT message, so that a redelivery of a stored message is stored once.
        """
        ...

    def reject(self, rejection: Rejection) -> None:
        """Record a value that was not accepted."""
        ...

    def status(self, device: str, status: DeviceStatus, error: str | None, time: float) -> None:
        """Record what a collector now knows of a device's health."""
        ...
