"""The readings store interface. The embedded SQLite backend is its one implementation.

Writes are batched, asynchronous and fallible: ``write`` raises ``StoreError`` when the batch was not
stored, and the caller keeps the batch and tries again.

Two questions are kept apart. *Is this the same message again?* An MQTT message is identified by its
``Delivery`` (packet id and a digest of topic and payload); the store records the deliveries it stored
in the same transaction as what they carried, and a redelivered message it has stored before is
skipped whole (readings and rejections), however its readings were stamped. *Are these the same
reading?* Two readings of one series at the same millisecond are the same reading only when they also
have the same value: the second is then counted as a ``duplicate`` and not stored again; with another
value it is a distinct reading and is stored a millisecond later, never merged away. ``write``
returns only the readings it newly stored, so nothing is seen twice downstream.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from core.types import Delivery, Reading, Rejection


class StoreError(Exception):
    """A batch could not be stored; it may succeed if tried again."""


@dataclass(frozen=True, slots=True)
class SeriesPoint:
    """One point of a history: a raw reading (count 1) or the aggregate of a step starting at time."""

    time: float
    mean: float
    min: float
    max: float
    count: int


@dataclass(frozen=True, slots=True)
class Redelivery:
    """A message the broker marked as delivered again, with what it carried: stored only if never seen."""

    delivery: Delivery
    readings: Sequence[Reading]
    rejections: Sequence[Rejection]


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What one write newly stored: readings not stored before, and the rejections it counted (those it
    was given, and the duplicates and out-of-retention readings it found itself)."""

    stored: list[Reading]
    counted: list[Rejection]
    found: Sequence[Rejection] = ()  # of the counted, those the store found itself (duplicates, too old)


class ReadingStore(Protocol):
    """What the pipeline and the API need from a time-series backend."""

    async def open(self) -> None:
        """Create or open the store."""
        ...

    async def write(
        self,
        batch: Sequence[Reading],
        rejections: Sequence[Rejection] = (),
        *,
        delivered: Sequence[Delivery] = (),
        redelivered: Sequence[Redelivery] = (),
    ) -> WriteResult:
        """Store readings, count rejections and record deliveries in one transaction, or raise StoreError."""
        ...

    async def rejection_counts(self) -> dict[str, dict[str, tuple[int, str | None, float | None]]]:
        """Rejected values counted so far: device → reason → (count, last detail, last time)."""
        ...

    async def latest(self) -> list[Reading]:
        """The newest reading of every series (device, metric)."""
        ...

    async def history(
        self,
        *,
        device: str,
        metric: str,
        start: float,
        end: float,
        step: float | None = None,
        limit: int = 10_000,
    ) -> list[SeriesPoint]:
        """Readings in [start, end): raw when step is None, else aggregated per step seconds."""
        ...

    async def maintain(self, now: float) -> None:
        """Roll raw readings up into hourly min/mean/max and drop raw readings past retention."""
        ...

    async def close(self) -> None:
        """Flush and release everything."""
        ...
