"""The runtime: starts and stops the service graph that service/services.py built.

Start order: records (migrations, configuration, saved device health, open alerts) → records writer →
readings store → pipeline → rules (warmed up from stored history) → embedded broker (if any) →
collectors → scheduler. Stop order is the reverse, and the pipeline writes what it still holds before the
stores close, so SIGTERM or Ctrl-C loses nothing that was accepted.

Every periodic job (device-health saves, the rules tick, readings maintenance, the Modbus polls) is
defined here, on the one APScheduler of the graph.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
from collections.abc import AsyncIterator

from sqlalchemy.orm import Session

from core.config import MqttDevice
from core.types import Reading
from rules.engine import DAY
from service.services import Services, concrete_devices
from store import records
from store.db import migrate
from store.ingest import DeviceHealth

log = logging.getLogger("bafang.runtime")

STATE_SAVE_INTERVAL = 10.0  # seconds between persisting device health
RULES_TICK = 5.0  # seconds between evaluations of every room (holds elapse, rooms close, silence)
MAINTAIN_INTERVAL = 600.0  # seconds between hourly roll-ups / retention passes
STOP_WRITES = 30.0  # seconds the records writer may take to write what is queued at shutdown


def _to_record(h: DeviceHealth) -> records.DeviceState:
    return records.DeviceState(
        id=h.id,
        room=h.room,
        protocol=h.protocol,
        status=h.status.value,
        status_since=h.status_since,
        last_seen=h.last_seen,
        last_error=h.last_error,
        rejected=dict(h.rejected),
        last_rejection={
            reason: records.LastRejection(detail, time)
            for reason, (detail, time) in h.last_rejections.items()
        },
    )


def _sync_records(s: Services) -> list[records.DeviceState]:
    """Migrate, record the configured rooms and devices, and read back saved device health."""
    migrate(s.records)
    devices = concrete_devices(s.config)
    with Session(s.records) as session, session.begin():
        records.sync_config(
            session,
            rooms=s.config.rooms,
            devices=[(d.id, d.room, d.name, d.protocol) for d in devices],
            now=s.clock.now(),
        )
    configured = {d.id for d in devices}
    # Devices heard on a wildcard topic have no entry of their own: keep theirs while the
    # wildcard entry for their room is still configured.
    template_rooms = {
        d.room for d in s.config.devices if isinstance(d, MqttDevice) and d.mqtt.device_id_segment is not None
    }
    with Session(s.records) as session:
        saved = records.load_device_states(session, include_removed=True)
    return [
        st for st in saved if st.id in configured or (st.protocol == "mqtt" and st.room in template_rooms)
    ]


async def start(s: Services) -> None:
    """Open the stores, warm the rules up and start collecting."""
    await open_stores(s)
    _settle_memory()
    await start_collecting(s)


def _settle_memory() -> None:
    """Move everything start-up made (modules, models, the configuration, warmed-up windows) out of
    the garbage collector's sight: ingest allocates readings by the hundred thousand, and every full
    collection would walk those long-lived objects again (measured: 12 → 8 µs a message in the MQTT
    handler). BAFANG_GC_GEN0 (default 10,000) is how many allocations trigger a young collection."""
    gc.collect()
    gc.freeze()
    gen0 = int(os.environ.get("BAFANG_GC_GEN0", "10000"))
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0, gen1, gen2)


async def open_stores(s: Services) -> None:
    """Everything but collection: records, writer, readings store, pipeline, rules warmed up.

    A test that drives the pipeline and the rules itself (with a ManualClock) stops here.
    """
    saved = await asyncio.to_thread(_sync_records, s)
    # Devices heard on a wildcard entry before keep their places under its max_devices.
    configured = {d.id for d in concrete_devices(s.config)}
    for collector in s.mqtt:
        collector.remember(
            {
                d.id: [
                    st.id
                    for st in saved
                    if st.protocol == "mqtt" and st.room == d.room and st.id not in configured
                ]
                for d in s.config.devices
                if isinstance(d, MqttDevice) and d.mqtt.device_id_segment is not None
            }
        )
    await asyncio.to_thread(s.book.load)
    s.writer.start()
    await s.readings.open()
    newest: dict[str, float] = {}
    for r in await s.readings.latest():
        newest[r.device] = max(r.time, newest.get(r.device, r.time))
    for collector in s.mqtt:
        collector.continue_stamps(newest)
    s.pipeline.restore(DeviceHealth(st.id, st.room, st.protocol, last_seen=st.last_seen) for st in saved)
    await s.pipeline.load_counts()
    await _warm_up(s)
    await s.pipeline.start()


async def start_collecting(s: Services) -> None:
    """The embedded broker (if any), the collectors and the periodic jobs."""
    cfg = s.config
    for broker in s.brokers:
        port = await broker.start(host="127.0.0.1", port=0)
        for collector in s.mqtt:
            collector.set_address("127.0.0.1", port)
    for collector in s.mqtt:
        collector.start()

    for modbus in s.modbus:
        modbus.schedule(s.scheduler)
    for job, seconds, name in JOBS:
        s.scheduler.add_job(
            job, "interval", args=[s], seconds=seconds, id=name, coalesce=True, max_instances=1
        )
    s.scheduler.start()
    mqtt_n = sum(isinstance(d, MqttDevice) for d in cfg.devices)
    log.info(
        "bafang started: %d rooms, %d Modbus and %d MQTT devices",
        len(cfg.rooms),
        len(cfg.devices) - mqtt_n,
        mqtt_n,
    )


async def _warm_up(s: Services) -> None:
    """Refill the rules from the store: 30 days of hourly climate (TWPI, mold risk), then the latest of
    every series and 24 h of raw readings where windowed. Stale readings from before the start raise no
    alert: every series gets its full interval from the start (rules/engine.py)."""
    rules, readings = s.rules, s.readings
    now = s.clock.now()
    rules.begin(now)
    for room, device in rules.climate_sources().items():
        start_t, end_t = now - 30 * DAY, now - DAY
        temps = await readings.history(
            device=device, metric="temperature", start=start_t, end=end_t, step=3600
        )
        hums = await readings.history(device=device, metric="humidity", start=start_t, end=end_t, step=3600)
        rh_at = {p.time: p.mean for p in hums}
        rules.seed_climate(room, [(p.time, p.mean, rh_at[p.time]) for p in temps if p.time in rh_at])
    batch: list[Reading] = list(await readings.latest())
    for device, metric, room in rules.window_series():
        points = await readings.history(device=device, metric=metric, start=now - DAY, end=now)
        batch += [Reading(device, room, metric, p.mean, "", p.time) for p in points]
    batch.sort(key=lambda r: r.time)
    rules.ingest(batch)
    rules.evaluate(now)


async def save_states(s: Services) -> None:
    """Have the records writer save the device health that changed (at most one save waits)."""
    held: list[records.DeviceState] | None = None

    def save(session: Session) -> None:
        # Taken when the writer runs it, so that a save waiting out a database outage saves everything
        # that changed meanwhile; kept across retries of the same transaction.
        nonlocal held
        if held is None:
            # A device whose room is not known yet (heard only through its availability topic) waits.
            held = [_to_record(h) for h in s.pipeline.take_dirty() if h.room]
        if held:
            records.save_device_states(session, states=held, now=s.clock.now())

    s.writer.submit(save, key=("device-states",), what="device health")


async def tick(s: Services) -> None:
    """Evaluate every room now."""
    s.rules.tick()


async def maintain(s: Services) -> None:
    """Hourly roll-up and retention of raw readings."""
    await s.readings.maintain(s.clock.now())


async def stop(s: Services) -> None:
    """Stop collecting, write what is buffered, close everything."""
    if s.scheduler.running:
        # Pause first and let polls in flight finish: shutdown() alone cancels them mid-read.
        s.scheduler.pause()
        await asyncio.sleep(0.2)
        s.scheduler.shutdown(wait=False)
    for modbus in s.modbus:
        await modbus.close()
    for collector in s.mqtt:
        collector.pause()  # what arrives from now on stays unacknowledged: the broker keeps it
    # While MQTT is still connected: store what is buffered and acknowledge it.
    await s.pipeline.stop()
    s.rules.evaluate_due()
    await save_states(s)
    for collector in s.mqtt:
        await collector.aclose()
    s.book.flush()
    if not await asyncio.to_thread(s.writer.close, STOP_WRITES):
        log.error("records: some writes were not done before stopping (the database did not answer)")
    await s.readings.close()
    for broker in s.brokers:
        await broker.stop()
    s.records.dispose()
    log.info("bafang stopped")


# Every periodic job of the graph (the Modbus polls are scheduled by their collector).
JOBS = (
    (save_states, STATE_SAVE_INTERVAL, "save-device-states"),
    (tick, RULES_TICK, "rules-tick"),
    (maintain, MAINTAIN_INTERVAL, "readings-maintenance"),
)


@contextlib.asynccontextmanager
async def running(s: Services) -> AsyncIterator[Services]:
    """Start the services, yield them, stop them (also on error)."""
    try:
        await start(s)
        yield s
    finally:
        await stop(s)
