"""The one ingest pipeline: every collector hands readings, rejections and device health here.

It lives in store/ because its job is to make readings durable before anything else sees them;
rules, the API and the runtime above it all use it.

A message's readings and rejected values are acknowledged (its ``ack`` called) only after the
transaction holding them commits, so a broker keeps every message whose contents are not yet stored.
A message comes with its ``Delivery`` (packet id and digest): the store records it in the same
transaction, and a redelivery of a message it already stored is recognised and stored once.

Collectors call ``submit``/``reject``/``status`` from any thread (paho's network thread, the event loop).
Readings are buffered and written to the readings store in batches from the event loop: as soon as
``batch_size`` readings wait, or when no reading has come for ``flush_interval / 50`` (the burst is
over), and at the latest ``flush_interval`` after the first buffered reading; a backlog (after the store
was away) is written ``batch_size`` readings at a time. Only after a batch is stored do the listeners
(rules, live feed) see it, so nothing downstream rests on a reading that was not kept. A failed write
keeps the batch and retries with backoff. Lingering and backoff run on the injected clock.

Memory is bounded: MQTT messages by the collector's in-flight window (receive_maximum; beyond it the
backlog waits in the broker), polled readings by ``max_pending`` (beyond it the oldest are dropped,
counted per device and metric as ``dropped``, and logged when dropping starts and when it ends), and
rejected values are folded per (device, metric, reason) while they wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

from core.clock import Clock, SystemClock
from core.types import Ack, Delivery, DeviceStatus, Reading, Reason, Rejection
from store.timeseries import ReadingStore, Redelivery, StoreError

log = logging.getLogger("bafang.pipeline")

Listener = Callable[[Sequence[Reading]], Awaitable[None]]
BACKOFF_MAX = 30.0
FOUND_LOG_INTERVAL = 60.0  # seconds between lines about readings the store did not take again


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """What the configuration says about a device."""

    id: str
    room: str
    protocol: str
    stale_after: float | None = None  # no reading for this long = offline; None = reports only on change


@dataclass(slots=True)
class DeviceHealth:
    """What the pipeline knows, live, about one device."""

    id: str
    room: str
    protocol: str
    stale_after: float | None = None
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

    def snapshot(self, now: float, started: float) -> DeviceHealth:
        """A copy, shown offline once it has been silent for ``stale_after`` since it was last seen
        and since the service started (a restart gives every device its full interval again)."""
        copy = replace(self, rejected=Counter(self.rejected), last_rejections=dict(self.last_rejections))
        if self.stale_after is not None and self.status is DeviceStatus.ONLINE and self.last_seen is not None:
            silent = now - max(self.last_seen, started)
            if silent > self.stale_after:
                copy.status = DeviceStatus.OFFLINE
                copy.last_error = f"no valid reading for {now - self.last_seen:.0f} s"
        return copy


@dataclass(slots=True)
class _Message:
    """One MQTT message waiting to be stored: what it carried, its ack, its delivery."""

    readings: Sequence[Reading]
    rejections: Sequence[Rejection]
    ack: Ack | None
    delivery: Delivery | None


@dataclass(slots=True)
class _Chunk:
    """What one write takes from the buffers."""

    polled: list[Reading]
    messages: list[_Message]
    rejections: list[Rejection]

    @property
    def empty(self) -> bool:
        return not (self.polled or self.messages or self.rejections)


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
        max_pending: int = 100_000,
    ) -> None:
        self._store = store
        self._clock: Clock = clock or SystemClock()
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._max_pending = max_pending
        self._lock = threading.Lock()
        self._polled: list[Reading] = []  # readings no ack waits for (Modbus polls, MQTT QoS 0)
        self._messages: deque[_Message] = deque()  # MQTT messages, in arrival order
        self._in_messages = 0  # readings in _messages
        self._folded: dict[tuple[str, str | None, Reason], Rejection] = {}  # rejections of polls
        self._dropped: Counter[tuple[str, str]] = Counter()  # (device, metric) → dropped since last write
        self._dropping_since: float | None = None
        self._dropped_total = 0
        self._found: Counter[str] = Counter()  # what the store refused since it was last logged
        self._found_devices: set[str] = set()
        self._found_last = ""
        self._found_logged_at = -FOUND_LOG_INTERVAL
        self._devices: dict[str, DeviceHealth] = {}
        self._dirty: set[str] = set()
        self._listeners: list[Listener] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._last_submit = 0.0
        self._started = self._clock.now()
        self.stored = 0
        self.dropped = 0
        self.write_failures = 0
        for info in devices:
            self._devices[info.id] = DeviceHealth(info.id, info.room, info.protocol, info.stale_after)

    # -- Sink ------------------------------------------------------------------------------------

    def submit(
        self,
        readings: Sequence[Reading],
        rejections: Sequence[Rejection] = (),
        *,
        ack: Ack | None = None,
        delivery: Delivery | None = None,
    ) -> None:
        """Accept readings and rejected values; call ``ack`` once they are stored (thread-safe)."""
        if not readings and not rejections and ack is None:
            return
        with self._lock:
            before = len(self._polled) + self._in_messages
            first = not (before or self._messages or self._folded)
            if ack is None and delivery is None:
                if readings:
                    self._polled.extend(readings)
                for rj in rejections:
                    self._fold(rj)
                    self._health(rj.device, None)
            else:
                self._messages.append(_Message(readings, rejections, ack, delivery))
                self._in_messages += len(readings)
                for rj in rejections:
                    self._health(rj.device, None)
            self._last_submit = self._clock.monotonic()
            if readings:
                self._seen(readings)
            if len(self._polled) > self._max_pending:
                self._drop_oldest(len(self._polled) - self._max_pending)
            # Wake the flusher once per batch: on the first reading, and when the batch fills (not on
            # every submit after that, which would cost a wake-up of the event loop per message).
            after = len(self._polled) + self._in_messages
            wake = first or before < self._batch_size <= after
        if wake:
            self._wake_soon()

    def _fold(self, rj: Rejection) -> None:
        """Keep one rejection per (device, metric, reason) while they wait: the count adds up."""
        key = (rj.device, rj.metric, rj.reason)
        seen = self._folded.get(key)
        self._folded[key] = rj if seen is None else replace(rj, count=seen.count + rj.count)

    def _drop_oldest(self, excess: int) -> None:
        # Only readings nobody waits an ack for (polled ones) are dropped: MQTT messages are bounded by
        # the collector's in-flight window and the rest stays in the broker.
        gone = self._polled[:excess]
        del self._polled[:excess]
        for r in gone:
            self._dropped[(r.device, r.metric)] += 1
        self.dropped += excess
        if self._dropping_since is None:
            self._dropping_since = self._clock.monotonic()
            log.error(
                "readings buffer full (%d waiting; the store is unavailable?): dropping the oldest polled "
                "readings, counted per device as 'dropped'",
                self._max_pending,
            )

    def _seen(self, readings: Sequence[Reading]) -> None:
        last = readings[-1]
        if readings[0].device == last.device:  # a collector's submit: one message or one poll
            self._seen_one(last)
            return
        by_device: dict[str, Reading] = {}
        for r in readings:
            by_device[r.device] = r
        for r in by_device.values():
            self._seen_one(r)

    def _seen_one(self, r: Reading) -> None:
        health = self._devices.get(r.device)
        if health is None or not health.room:
            health = self._health(r.device, r.room)
        seen = health.last_seen
        if seen is None or r.time > seen:
            health.last_seen = r.time
        if health.status is not DeviceStatus.ONLINE:
            self._set_status(health, DeviceStatus.ONLINE, None, r.time)
        self._dirty.add(r.device)

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
            # A device first heard on a wildcard topic (the collector caps how many): known from now on.
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
            return [h.snapshot(now, self._started) for h in self._devices.values()]

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
                    health = self._devices[saved.id] = DeviceHealth(
                        saved.id, saved.room, saved.protocol, saved.stale_after
                    )
                health.last_seen = saved.last_seen

    def take_dirty(self) -> list[DeviceHealth]:
        """Snapshots of the devices changed since the last call (to persist them)."""
        now = self._clock.now()
        with self._lock:
            dirty, self._dirty = self._dirty, set()
            return [self._devices[d].snapshot(now, self._started) for d in dirty if d in self._devices]

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
            return len(self._polled) + self._in_messages

    async def start(self) -> None:
        """Start the background flush task on the running loop."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._stopping = False
        self._started = self._clock.now()
        self._task = asyncio.create_task(self._run(), name="bafang-pipeline-flush")

    async def _run(self) -> None:
        assert self._wake is not None
        wake = self._wake
        quiet = self._flush_interval / 50
        backoff = 0.0
        clock = self._clock
        while not self._stopping:
            await wake.wait()  # set by the first reading after a flush, a full batch, or stop()
            wake.clear()
            # Linger while a burst goes on, so that batches fill, but not past flush_interval.
            deadline = clock.monotonic() + self._flush_interval
            while not self._stopping and self.pending < self._batch_size:
                now = clock.monotonic()
                idle = now - self._last_submit
                if idle >= quiet or now >= deadline:
                    break
                await self._wait(wake, min(quiet - idle, deadline - now))
                wake.clear()
            if await self.flush():
                backoff = 0.0
                if self._has_more():
                    wake.set()  # a backlog: the next chunk at once
            else:
                backoff = min(max(backoff * 2, 0.5), BACKOFF_MAX)
                await self._wait(asyncio.Event(), backoff)
                wake.set()  # try the kept readings again

    async def _wait(self, event: asyncio.Event, seconds: float) -> None:
        """Until ``event`` is set or ``seconds`` pass on the clock."""
        sleeper = asyncio.ensure_future(self._clock.sleep(seconds))
        waiter = asyncio.ensure_future(event.wait())
        try:
            await asyncio.wait((sleeper, waiter), return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            waiter.cancel()

    def _has_more(self) -> bool:
        with self._lock:
            return bool(self._polled or self._messages or self._folded or self._dropped)

    def _take(self) -> _Chunk:
        """At most batch_size readings: whole messages first (their acks wait), then polled readings."""
        with self._lock:
            limit = self._batch_size
            messages: list[_Message] = []
            n = 0
            while self._messages and (not messages or n + len(self._messages[0].readings) <= limit):
                m = self._messages.popleft()
                messages.append(m)
                n += len(m.readings)
            self._in_messages -= n
            room = max(0, limit - n)
            if room >= len(self._polled):
                polled, self._polled = self._polled, []
            else:
                polled = self._polled[:room]
                del self._polled[:room]
            rejections = list(self._folded.values())
            self._folded = {}
            if self._dropped:
                now = self._clock.now()
                for (device, metric), count in self._dropped.items():
                    detail = (
                        f"{count} readings dropped: the store was unavailable and {self._max_pending} waited"
                    )
                    rejections.append(Rejection(device, metric, Reason.DROPPED, detail, now, count))
                self._dropped.clear()
            return _Chunk(polled, messages, rejections)

    def _put_back(self, chunk: _Chunk) -> None:
        with self._lock:
            self._polled[:0] = chunk.polled
            self._messages.extendleft(reversed(chunk.messages))
            self._in_messages += sum(len(m.readings) for m in chunk.messages)
            for rj in chunk.rejections:
                if rj.reason is Reason.DROPPED:
                    assert rj.metric is not None
                    self._dropped[(rj.device, rj.metric)] += rj.count
                else:
                    self._fold(rj)

    async def flush(self) -> bool:
        """Write one chunk of what is buffered; False when the store refused it (everything is kept)."""
        chunk = self._take()
        if chunk.empty:
            return True
        batch = list(chunk.polled)
        rejections = list(chunk.rejections)
        delivered: list[Delivery] = []
        redelivered: list[Redelivery] = []
        for m in chunk.messages:
            d = m.delivery
            if d is not None and d.redelivered:
                # The store decides: stored once already (skip it), or never seen (store it).
                redelivered.append(Redelivery(d, m.readings, m.rejections))
                continue
            batch.extend(m.readings)
            rejections.extend(m.rejections)
            if d is not None:
                delivered.append(d)
        try:
            result = await self._store.write(batch, rejections, delivered=delivered, redelivered=redelivered)
        except Exception as exc:
            # Nothing is lost: the chunk goes back to the front and is tried again with backoff.
            self.write_failures += 1
            self._put_back(chunk)
            if isinstance(exc, StoreError):
                log.error("readings store write of %d readings failed, will retry: %s", len(batch), exc)
            else:
                log.exception("readings store write of %d readings failed, will retry", len(batch))
            return False
        self.stored += len(result.stored)
        if result.counted:
            self._count(result.counted)
        if result.found:
            self._note_found(result.found)
        if self._dropping_since is not None:
            with self._lock:
                still = len(self._polled) >= self._max_pending
            if not still:
                log.warning(
                    "readings buffer writing again: %d polled readings were dropped over %.0f s",
                    self.dropped - self._dropped_total,
                    self._clock.monotonic() - self._dropping_since,
                )
                self._dropping_since, self._dropped_total = None, self.dropped
        for m in chunk.messages:
            if m.ack is not None:
                try:
                    m.ack()
                except Exception:
                    log.exception("acknowledging a stored message failed")
        if result.stored:
            for listener in self._listeners:
                try:
                    await listener(result.stored)
                except Exception:
                    log.exception("a readings listener failed")
        return True

    def _note_found(self, found: Sequence[Rejection]) -> None:
        """Log what the store itself refused (duplicates, readings before the retention), at most once a
        minute with the count since the last line: counted per device, never silent, never a flood."""
        for rj in found:
            self._found[rj.reason.value] += rj.count
            self._found_devices.add(rj.device)
            self._found_last = rj.detail
        now = self._clock.monotonic()
        if now - self._found_logged_at < FOUND_LOG_INTERVAL:
            return
        self._found_logged_at = now
        what = ", ".join(f"{n} {reason}" for reason, n in sorted(self._found.items()))
        devices = sorted(self._found_devices)
        shown = ", ".join(devices[:5]) + (f" and {len(devices) - 5} more" if len(devices) > 5 else "")
        log.warning("readings not stored again: %s (devices %s; last: %s)", what, shown, self._found_last)
        self._found.clear()
        self._found_devices.clear()

    def _count(self, rejections: Sequence[Rejection]) -> None:
        with self._lock:
            for rj in rejections:
                health = self._health(rj.device, None)
                reason = rj.reason.value
                health.rejected[reason] += rj.count
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
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        failures = 0
        while self._has_more() and failures < 3:
            if not await self.flush():
                failures += 1
