"""The records writer: one thread that owns every write to the records database.

The event loop never waits for the records database. Whoever changes a record (the alert book, the
device-health saver, a person's acknowledgement through the API) hands the writer a function of a
``Session``; the writer runs the functions one after another, in the order they were submitted, each
in its own transaction, and resolves the ``Future`` it returned with the function's result.

A database that is slow, locked (a SQLite file held by a backup) or unreachable (PostgreSQL
restarting) only delays the writer: a function that fails with a transient database error is rolled
back and run again, with backoff, until it succeeds, and everything behind it waits in order, so once
the database is back every transition is written, in the order it happened. The first failure and the
recovery are logged once each. Any other exception (a constraint, a refusal raised by the function
itself) fails that function's Future and the writer goes on with the next.

Submissions may carry a ``key``: a queued function that has not started yet is replaced by a newer
one with the same key (the latest device health, the latest worst value of an alert), which keeps the
queue bounded by the number of keys while the database is away. No lock is held across I/O: the
queue's lock only guards the queue.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from core.clock import Clock, SystemClock
from store.db import SQLITE_BEGIN, make_sessionmaker

log = logging.getLogger("bafang.records")

T = TypeVar("T")

BACKOFF_MIN = 0.2  # seconds before the first retry of a failed transaction
BACKOFF_MAX = 10.0
SLOW_WRITE = 10.0  # a write that waits this long for the database is logged (once) by the next submit


def transient(exc: BaseException) -> bool:
    """Whether a database error may go away by itself (locked, busy, connection lost, server restarting)."""
    if isinstance(exc, OperationalError):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


@dataclass(slots=True)
class _Job(Generic[T]):
    fn: Callable[[Session], T]
    future: Future[T]
    key: Hashable | None
    what: str
    started: bool = False


@dataclass(slots=True)
class _Stats:
    written: int = 0
    retries: int = 0
    failed: int = 0
    replaced: int = 0
    failing_since: float | None = None
    last_error: str | None = None
    last_outage: float | None = None  # seconds the last failing spell lasted


class RecordsWriter:
    """Runs functions of a Session on one thread, in order, each in a transaction, retrying transient errors."""

    def __init__(
        self,
        engine: Engine,
        *,
        clock: Clock | None = None,
        backoff_min: float = BACKOFF_MIN,
        backoff_max: float = BACKOFF_MAX,
    ) -> None:
        self._clock: Clock = clock or SystemClock()
        # On SQLite take the write lock at BEGIN, so a transaction never has to upgrade a read lock.
        writer = (
            engine.execution_options(**{SQLITE_BEGIN: "IMMEDIATE"})
            if engine.dialect.name == "sqlite"
            else engine
        )
        self._sessions: sessionmaker[Session] = make_sessionmaker(writer)
        self._where = engine.url.render_as_string(hide_password=True)
        self._backoff_min = backoff_min
        self._backoff_max = backoff_max
        self._cond = threading.Condition()
        self._queue: deque[_Job[Any]] = deque()
        self._keyed: dict[Hashable, _Job[Any]] = {}
        self._busy = False
        self._busy_since: float | None = None  # clock's monotonic time the running write started
        self._slow_logged = False
        self._closing = False
        self._stop_now = threading.Event()
        self._thread: threading.Thread | None = None
        self.stats = _Stats()

    # -- life ------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the writer thread (idempotent)."""
        if self._thread is not None:
            return
        self._closing = False
        self._stop_now.clear()
        self._thread = threading.Thread(target=self._run, name="bafang-records-writer", daemon=True)
        self._thread.start()

    def close(self, timeout: float | None = 30.0) -> bool:
        """Write what is queued (waiting at most ``timeout`` s), then stop; False if work was left."""
        thread = self._thread
        if thread is None:
            return True
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        thread.join(timeout)
        if thread.is_alive():
            # The database did not come back in time: give up, say what is lost.
            self._stop_now.set()
            with self._cond:
                self._cond.notify_all()
            thread.join(5.0)
            left = self.pending
            log.error("records %s: stopped with %d writes not done (database unavailable)", self._where, left)
            self._thread = None
            return False
        self._thread = None
        return True

    # -- submitting ------------------------------------------------------------------------------

    def submit(self, fn: Callable[[Session], T], *, key: Hashable | None = None, what: str = "") -> Future[T]:
        """Queue ``fn`` to run in its own transaction; its Future gets the result (thread-safe).

        With ``key``, a queued function of the same key that has not started is replaced (its Future
        then gets this one's result).
        """
        future: Future[T] = Future()
        with self._cond:
            if self._closing and self._thread is None:
                raise RuntimeError(f"records {self._where}: writer is closed")
            self._check_slow()
            if key is not None:
                old = self._keyed.get(key)
                if old is not None and not old.started:
                    old.fn = fn
                    old.what = what or old.what
                    self.stats.replaced += 1
                    chained: Future[T] = old.future
                    _chain(chained, future)
                    return future
            job: _Job[T] = _Job(fn, future, key, what)
            self._queue.append(job)
            if key is not None:
                self._keyed[key] = job
            self._cond.notify()
        return future

    def _check_slow(self) -> None:
        """Say once when the running write has waited SLOW_WRITE s (a database that blocks without
        refusing, such as a lock on PostgreSQL, gives the writer no error to report). Holds _cond."""
        since = self._busy_since
        if since is None or self._slow_logged:
            return
        waited = self._clock.monotonic() - since
        if waited >= SLOW_WRITE:
            self._slow_logged = True
            log.warning(
                "records %s: a write has waited %.0f s for the database; %d writes wait behind it",
                self._where,
                waited,
                len(self._queue) - 1,
            )

    @property
    def waiting_for(self) -> float | None:
        """How long the running write has been waiting for the database (None when idle)."""
        since = self._busy_since
        return None if since is None else self._clock.monotonic() - since

    @property
    def pending(self) -> int:
        """Functions queued or running (the running one stays at the head of the queue until done)."""
        with self._cond:
            return len(self._queue)

    @property
    def failing(self) -> bool:
        """Whether the database is refusing writes right now."""
        return self.stats.failing_since is not None

    def drain(self, timeout: float | None = None) -> bool:
        """Block until everything submitted so far is done; False on timeout. Not on the event loop."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._queue and not self._busy, timeout)

    async def drain_async(self, limit: float | None = None) -> bool:
        """Await until everything submitted so far is done, at most ``limit`` s (the loop keeps running)."""
        return await asyncio.to_thread(self.drain, limit)

    # -- the thread ------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return  # closing, nothing left
                if self._stop_now.is_set():
                    return
                job = self._queue[0]
                job.started = True
                if job.key is not None and self._keyed.get(job.key) is job:
                    del self._keyed[job.key]
                self._busy = True
                self._busy_since = self._clock.monotonic()
            try:
                self._execute(job)
            finally:
                with self._cond:
                    self._queue.popleft()
                    self._busy = False
                    if self._slow_logged:
                        log.info(
                            "records %s: the database answered after %.0f s",
                            self._where,
                            self._clock.monotonic() - (self._busy_since or 0.0),
                        )
                    self._busy_since = None
                    self._slow_logged = False
                    self._cond.notify_all()

    def _execute(self, job: _Job[Any]) -> None:
        delay = self._backoff_min
        while True:
            try:
                with self._sessions.begin() as session:
                    result = job.fn(session)
            except Exception as exc:
                if transient(exc) and not self._stop_now.is_set():
                    self._failed(job, exc)
                    self.stats.retries += 1
                    if self._stop_now.wait(delay):
                        job.future.set_exception(exc)
                        return
                    delay = min(delay * 2, self._backoff_max)
                    continue
                self.stats.failed += 1
                if not isinstance(exc, DBAPIError):
                    log.debug("records %s: %s refused: %s", self._where, job.what or "write", exc)
                else:
                    log.error(
                        "records %s: %s failed and is dropped: %s", self._where, job.what or "write", exc
                    )
                self._recovered()
                job.future.set_exception(exc)
                return
            self.stats.written += 1
            self._recovered()
            job.future.set_result(result)
            return

    def _failed(self, job: _Job[Any], exc: BaseException) -> None:
        text = str(getattr(exc, "orig", exc) or exc).strip().splitlines()[0]
        if self.stats.failing_since is None:
            self.stats.failing_since = self._clock.monotonic()
            log.warning(
                "records %s: %s failed (%s); writes wait and are retried until the database answers",
                self._where,
                job.what or "a write",
                text,
            )
        self.stats.last_error = text

    def _recovered(self) -> None:
        since = self.stats.failing_since
        if since is None:
            return
        self.stats.failing_since = None
        waited = self._clock.monotonic() - since
        self.stats.last_outage = waited
        log.info(
            "records %s: writing again after %.1f s (%d writes were waiting)",
            self._where,
            waited,
            self.pending,
        )


def _chain(source: Future[T], target: Future[T]) -> None:
    """Resolve ``target`` as ``source`` resolves."""

    def copy(done: Future[T]) -> None:
        exc = done.exception()
        if exc is not None:
            target.set_exception(exc)
        else:
            target.set_result(done.result())

    source.add_done_callback(copy)
