"""The readings store interface. The embedded SQLite backend implements it now; InfluxDB later.

Writes are batched, asynchronous and fallible: ``write`` raises ``StoreError`` when the batch was not
stored, and the caller keeps the batch and tries again. Inserts are idempotent on a reading's identity
(device, metric, time in milliseconds): writing the same reading twice stores it once, and ``write``
returns only the readings it newly stored, so a redelivery is not seen twice downstream. Rejected
values are counted in the same transaction, once per message key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from core.types import Reading, Rejection


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
class WriteResult:
    """What one write newly stored: readings not stored before, rejections not counted before."""

    stored: list[Reading]
    counted: list[Rejection]


class ReadingStore(Protocol):
    """What the pipeline and the API need from a time-series backend."""

    async def open(self) -> None:
        """Create or open the store."""
        ...

    async def write(self, batch: Sequence[Reading], rejections: Sequence[Rejection] = ()) -> WriteResult:
        """Store readings and count rejections in one transaction, or raise StoreError."""
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
