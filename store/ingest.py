"""The one ingest pipeline: every collector hands readings, rejections and device health here.

It lives in store/ because its job is to make readings durable before anything else sees them;
rules, the API and the runtime above it all use it.

A message's readings and rejected values are acknowledged (its ``ack`` called) only after the
transaction holding them commits, so a broker keeps every message whose contents are not yet stored.

Collectors call ``submit``/``reject``/``status`` from any thread (paho's network thread, the event loop).
Readings are buffered and written to the readings store in batches from the event loop: as soon as
``batch_size`` readings wait, or when no reading has come for ``flush_interval / 50`` (the burst is
over), and at the latest ``flush_interval`` after the first buffered reading. Only after a batch is stored do the listeners (rules, live feed) see it,
so nothing downstream rests on a reading that was not kept. A failed write keeps the batch and retries
with backoff. Device health, last-seen times and rejection counts are kept here, live.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

from core.clock import Clock, SystemClock
from core.types import Ack, DeviceStatus, Reading, Rejection
from store.timeseries import ReadingStore, StoreError

log = logging.getLogger("bafang.pipeline")

Listener = Callable[[Sequence[Reading]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """What the configuration says about a device."""

    id: str
    room: str
    protocol: str
    expected_interval: float | None = None  # seconds between reports; None = reports only on change


@dataclass(slots=True)
class DeviceHealth:
    """What the pipeline knows, live, about one device."""

    id: str
    room: str
    protocol: str
    expected_interval: float | None = None
    status: DeviceStatus = DeviceStatus.UNKNOWN
    status_since: float | None = None
    last_seen: float | None = None
    last_error: str | None = None
    rejected: Counter[str] = field(default_factory=Counter)
    last_rejections: dict[str, tuple[str, float]] = field(default_factory=dict)  # reason → (detail, time)

    @property
    def last_rejection(self) -> str | None:
        """The detail of the most recent rejected value."""
        if not self.last_rejections:
            return None
        return max(self.last_rejections.values(), key=lambda dt: dt[1])[0]

    def snapshot(self, now: float) -> DeviceHealth:
        """A copy, with a silent device shown offline once three expected reports are missed."""
        copy = replace(self, rejected=Counter(self.rejected), last_rejections=dict(self.last_rejections))
        if (
            self.expected_interval is not None
            and self.status is DeviceStatus.ONLINE
            and self.last_seen is not None
            and now - self.last_seen > 3 * self.expected_interval
        ):
            copy.status = DeviceStatus.OFFLINE
            copy.last_error = f"no valid reading for {now - self.last_seen:.0f} s"
        return copy


class Pipeline:
    """Buffers readings, writes them in batches, tracks device health; implements core.types.Sink."""

    def __init__(
        self,
        store: ReadingStore,
        *,
        devices: Iterable[DeviceInfo] = (),
        clock: Clock | None = None,
        batch_size: int = 1000,
        flush_interval: float = 1.0,
        max_buffer: int = 1_000_000,
    ) -> None:
        self._store = store
        self._clock = clock or SystemClock()
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._max_buffer = max_buffer
        self._lock = threading.Lock()
        self._buffer: list[Reading] = []
        self._rejections: list[Rejection] = []
        self._acks: list[Ack] = []
        self._devices: dict[str, DeviceHealth] = {}
        self._dirty: set[str] = set()
        self._listeners: list[Listener] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._last_submit = 0.0
        self.stored = 0
        self.dropped = 0
        self.write_failures = 0
        for info in devices:
            self._devices[info.id] = DeviceHealth(info.id, info.room, info.protocol, info.expected_interval)

    # -- Sink ------------------------------------------------------------------------------------

    def submit(
        self, readings: Sequence[Reading], rejections: Sequence[Rejection] = (), *, ack: Ack | None = None
    ) -> None:
        """Accept readings and rejected values; call ``ack`` once they are stored (thread-safe)."""
        if not readings and not rejections and ack is None:
            return
        with self._lock:
            first = not (self._buffer or self._rejections or self._acks)
            before = len(self._buffer)
            self._buffer.extend(readings)
            if rejections:
                self._rejections.extend(rejections)
                for rj in rejections:
                    self._health(rj.device, None)
            if ack is not None:
                self._acks.append(ack)
            self._last_submit = time.monotonic()
            if readings:
                self._seen(readings)
            if len(self._buffer) > self._max_buffer and not self._acks:
                # Only readings nobody waits an ack for (polled ones) are ever dropped: MQTT messages
                # are bounded by the collector's in-flight window and stay in the broker.
                excess = len(self._buffer) - self._max_buffer
                del self._buffer[:excess]
                self.dropped += excess
                log.error("readings buffer full (store unavailable?): dropped the %d oldest readings", excess)
            # Wake the flusher once per batch: on the first reading, and when the batch fills (not on
            # every submit after that, which would cost a wake-up of the event loop per message).
            wake = first or before < self._batch_size <= len(self._buffer)
        if wake:
            self._wake_soon()

    def _seen(self, readings: Sequence[Reading]) -> None:
        last: dict[str, Reading] = {}
        for r in readings:
            last[r.device] = r
        for device, r in last.items():
            health = self._health(device, r.room)
            if health.last_seen is None or r.time > health.last_seen:
                health.last_seen = r.time
            if health.status is not DeviceStatus.ONLINE:
                self._set_status(health, DeviceStatus.ONLINE, None, r.time)
            self._dirty.add(device)

    def reject(self, rejection: Rejection) -> None:
        """Count a rejected value (once stored, like readings); thread-safe. The collector logs it."""
        self.submit((), (rejection,))

    def status(self, device: str, status: DeviceStatus, error: str | None, time: float) -> None:
        """Record a collector's view of a device's health (thread-safe). The collector logs edges."""
        with self._lock:
            health = self._health(device, None)
            if health.status is status and health.last_error == error:
                return
            self._set_status(health, status, error, time)
            self._dirty.add(device)

    # -- health ----------------------------------------------------------------------------------

    def _health(self, device: str, room: str | None) -> DeviceHealth:
        health = self._devices.get(device)
        if health is None:
            # A device first heard on a wildcard topic: known from now on.
            health = DeviceHealth(device, room or "", "mqtt")
            self._devices[device] = health
        elif room and not health.room:
            health.room = room
        return health

    def _set_status(self, health: DeviceHealth, status: DeviceStatus, error: str | None, time: float) -> None:
        if health.status is not status:
            health.status_since = time
        health.status = status
        health.last_error = error

    def devices(self) -> list[DeviceHealth]:
        """A snapshot of every device's health, in configuration order."""
        now = self._clock.now()
        with self._lock:
            return [h.snapshot(now) for h in self._devices.values()]

    def unavailable(self) -> dict[str, frozenset[str]]:
        """Per room, the devices their collector reports offline or faulty (cheap: no copies)."""
        out: dict[str, set[str]] = {}
        with self._lock:
            for h in self._devices.values():
                if h.status is DeviceStatus.OFFLINE or h.status is DeviceStatus.FAULTY:
                    out.setdefault(h.room, set()).add(h.id)
        return {room: frozenset(ids) for room, ids in out.items()}

    def restore(self, states: Iterable[DeviceHealth]) -> None:
        """Take back last-seen times saved before a restart (and devices heard on wildcard topics)."""
        with self._lock:
            for saved in states:
                health = self._devices.get(saved.id)
                if health is None:
                    if saved.protocol != "mqtt":
                        continue  # a Modbus device no longer configured
                    health = self._devices[saved.id] = DeviceHealth(saved.id, saved.room, saved.protocol)
                health.last_seen = saved.last_seen

    def take_dirty(self) -> list[DeviceHealth]:
        """Snapshots of the devices changed since the last call (to persist them)."""
        now = self._clock.now()
        with self._lock:
            dirty, self._dirty = self._dirty, set()
            return [self._devices[d].snapshot(now) for d in dirty if d in self._devices]

    # -- flushing --------------------------------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener`` with every batch once it is stored."""
        self._listeners.append(listener)

    def _wake_soon(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is None or wake is None:
            return
        try:
            if loop is asyncio.get_running_loop():
                wake.set()
                return
        except RuntimeError:
            pass
        loop.call_soon_threadsafe(wake.set)

    @property
    def pending(self) -> int:
        """Readings accepted but not yet stored."""
        with self._lock:
            return len(self._buffer)

    async def start(self) -> None:
        """Start the background flush task on the running loop."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="bafang-pipeline-flush")

    async def _run(self) -> None:
        assert self._wake is not None
        wake = self._wake
        quiet = self._flush_interval / 50
        backoff = 0.0
        while not self._stopping:
            await wake.wait()  # set by the first reading after a flush, a full batch, or stop()
            wake.clear()
            # Linger while a burst goes on, so that batches fill, but not past flush_interval.
            deadline = time.monotonic() + self._flush_interval
            while not self._stopping and self.pending < self._batch_size:
                now = time.monotonic()
                idle = now - self._last_submit
                if idle >= quiet or now >= deadline:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), timeout=min(quiet - idle, deadline - now))
                wake.clear()
            if await self.flush():
                backoff = 0.0
            else:
                backoff = min(max(backoff * 2, 0.5), 30.0)
                await asyncio.sleep(backoff)
                wake.set()  # try the kept readings again

    async def flush(self) -> bool:
        """Write everything buffered now; False when the store refused it (everything is kept)."""
        with self._lock:
            batch, self._buffer = self._buffer, []
            rejections, self._rejections = self._rejections, []
            acks, self._acks = self._acks, []
        if not (batch or rejections or acks):
            return True
        try:
            result = await self._store.write(batch, rejections)
        except Exception as exc:
            # Nothing is lost: the batch goes back to the front and is tried again with backoff.
            self.write_failures += 1
            with self._lock:
                self._buffer[:0] = batch
                self._rejections[:0] = rejections
                self._acks[:0] = acks
            if isinstance(exc, StoreError):
                log.error("readings store write of %d readings failed, will retry: %s", len(batch), exc)
            else:
                log.exception("readings store write of %d readings failed, will retry", len(batch))
            return False
        self.stored += len(result.stored)
        if result.counted:
            self._count(result.counted)
        for ack in acks:
            try:
                ack()
            except Exception:
                log.exception("acknowledging a stored message failed")
        if result.stored:
            for listener in self._listeners:
                try:
                    await listener(result.stored)
                except Exception:
                    log.exception("a readings listener failed")
        return True

    def _count(self, rejections: Sequence[Rejection]) -> None:
        with self._lock:
            for rj in rejections:
                health = self._health(rj.device, None)
                reason = rj.reason.value
                health.rejected[reason] += 1
                health.last_rejections[reason] = (rj.detail, rj.time)
                self._dirty.add(rj.device)

    async def load_counts(self) -> None:
        """Take the rejection counts the store has kept (they survive restarts and crashes)."""
        counts = await self._store.rejection_counts()
        with self._lock:
            for device, reasons in counts.items():
                health = self._devices.get(device)
                if health is None:
                    continue
                health.rejected.clear()
                health.last_rejections.clear()
                for reason, (count, detail, at) in reasons.items():
                    health.rejected[reason] = count
                    if detail is not None and at is not None:
                        health.last_rejections[reason] = (detail, at)

    async def stop(self) -> None:
        """Stop the flush task and write what is still buffered."""
        self._stopping = True
        if self._wake is not None:
            self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None
        for _ in range(3):
            if await self.flush():
                break
