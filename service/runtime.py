"""The composition root: builds stores, pipeline, collectors, scheduler and API from a Config.

Start order: records (migrations) → readings store → pipeline → embedded broker (if any) → collectors
→ scheduler. Stop order is the reverse, and the pipeline writes what it still holds before the stores
close, so SIGTERM or Ctrl-C loses nothing that was accepted.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from fastapi import FastAPI
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from api.app import create_app
from api.deps import AppContext
from collectors.modbus import ModbusCollector
from collectors.mqtt import MqttCollector
from core.clock import Clock, SystemClock
from core.config import Config, ModbusDevice, MqttDevice
from core.types import Reading
from rules.engine import DAY, RulesEngine, bind_evaluators
from rules.lifecycle import AlertBook
from service.broker import EmbeddedBroker
from store import records
from store.db import make_engine, migrate
from store.ingest import DeviceHealth, DeviceInfo, Pipeline
from store.sqlite import SqliteReadingStore

log = logging.getLogger("bafang.runtime")

STATE_SAVE_INTERVAL = 10.0  # seconds between persisting device health
RULES_TICK = 5.0  # seconds between evaluations of every room (holds elapse, rooms close, silence)
MAINTAIN_INTERVAL = 600.0  # seconds between hourly roll-ups / retention passes


def readings_path(config: Config) -> Path:
    """Where the SQLite readings store lives: configured, else beside a SQLite records database."""
    ts = config.storage.timeseries
    if ts.path:
        return Path(ts.path)
    url = config.storage.database
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        return Path(url.removeprefix("sqlite:///")).parent / "readings.db"
    return Path("data") / "readings.db"


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


def _from_record(s: records.DeviceState) -> DeviceHealth:
    return DeviceHealth(s.id, s.room, s.protocol, last_seen=s.last_seen)


@dataclass
class Runtime:
    """Everything one Bafang process runs."""

    config: Config
    clock: Clock = field(default_factory=SystemClock)
    engine: Engine | None = None
    readings: SqliteReadingStore | None = None
    pipeline: Pipeline | None = None
    broker: EmbeddedBroker | None = None
    mqtt: MqttCollector | None = None
    modbus: ModbusCollector | None = None
    scheduler: AsyncIOScheduler | None = None
    mqtt_port: int | None = None
    alerts: AlertBook | None = None
    rules: RulesEngine | None = None

    async def start(self) -> None:
        """Open the stores and start collecting."""
        cfg = self.config
        self.engine = make_engine(cfg.storage.database)
        await asyncio.to_thread(migrate, self.engine)
        saved = await asyncio.to_thread(self._sync_records)

        ts = cfg.storage.timeseries
        self.readings = SqliteReadingStore(
            readings_path(cfg), retention_days=ts.retention_days, clock=self.clock
        )
        await self.readings.open()
        infos = [DeviceInfo(d.id, d.room, d.protocol, d.poll) for d in self._concrete_devices()]
        self.pipeline = Pipeline(
            self.readings,
            devices=infos,
            clock=self.clock,
            batch_size=ts.batch_size,
            flush_interval=ts.flush_interval,
        )
        self.pipeline.restore(_from_record(s) for s in saved)
        await self.pipeline.load_counts()

        self.alerts = AlertBook(self.engine, clock=self.clock)
        await asyncio.to_thread(self.alerts.load)
        self.rules = RulesEngine(
            cfg, self.alerts, bind_evaluators(cfg), clock=self.clock, offline=self.pipeline.unavailable
        )
        await self._warm_up(self.rules, self.readings)
        # Rules see a reading once it is stored, never before.
        self.pipeline.add_listener(self.rules.on_readings)
        await self.pipeline.start()

        mqtt_devices = [d for d in cfg.devices if isinstance(d, MqttDevice)]
        modbus_devices = [d for d in cfg.devices if isinstance(d, ModbusDevice)]
        host: str | None = None
        if cfg.mqtt.url == "embedded":
            self.broker = EmbeddedBroker()
            self.mqtt_port = await self.broker.start(host="127.0.0.1", port=0)
            host = "127.0.0.1"
            log.info("embedded MQTT broker listening on 127.0.0.1:%d", self.mqtt_port)
        else:
            parsed = urlparse(cfg.mqtt.url)
            self.mqtt_port = parsed.port or (8883 if parsed.scheme == "mqtts" else 1883)
        if mqtt_devices:
            self.mqtt = MqttCollector(
                cfg.mqtt,
                mqtt_devices,
                self.pipeline,
                clock=self.clock,
                host=host,
                port=self.mqtt_port,
                timezone=cfg.site.timezone,  # payload times without an offset are site-local
            )
            self.mqtt.start()

        self.scheduler = AsyncIOScheduler(timezone=cfg.site.timezone)
        if modbus_devices:
            self.modbus = ModbusCollector(modbus_devices, self.pipeline, clock=self.clock)
            self.modbus.schedule(self.scheduler)
        self.scheduler.add_job(
            self.save_states,
            "interval",
            seconds=STATE_SAVE_INTERVAL,
            id="save-device-states",
            coalesce=True,
            max_instances=1,
        )
        self.scheduler.add_job(
            self.tick, "interval", seconds=RULES_TICK, id="rules-tick", coalesce=True, max_instances=1
        )
        self.scheduler.add_job(
            self.maintain,
            "interval",
            seconds=MAINTAIN_INTERVAL,
            id="readings-maintenance",
            coalesce=True,
            max_instances=1,
        )
        self.scheduler.start()
        log.info(
            "bafang started: %d rooms, %d Modbus and %d MQTT devices",
            len(cfg.rooms),
            len(modbus_devices),
            len(mqtt_devices),
        )

    def _sync_records(self) -> list[records.DeviceState]:
        assert self.engine is not None
        with Session(self.engine) as session, session.begin():
            records.sync_config(
                session,
                rooms=self.config.rooms,
                devices=[(d.id, d.room, d.name, d.protocol) for d in self._concrete_devices()],
            )
        configured = {d.id for d in self._concrete_devices()}
        # Devices heard on a wildcard topic have no entry of their own: keep theirs while the
        # wildcard entry for their room is still configured.
        template_rooms = {
            d.room
            for d in self.config.devices
            if isinstance(d, MqttDevice) and d.mqtt.device_id_segment is not None
        }
        with Session(self.engine) as session:
            saved = records.load_device_states(session, include_removed=True)
        return [s for s in saved if s.id in configured or (s.protocol == "mqtt" and s.room in template_rooms)]

    def _concrete_devices(self) -> list[ModbusDevice | MqttDevice]:
        """Configured devices, less the wildcard entries that stand for devices heard later."""
        return [
            d
            for d in self.config.devices
            if not (isinstance(d, MqttDevice) and d.mqtt.device_id_segment is not None)
        ]

    async def save_states(self) -> None:
        """Persist the device health that changed since the last save."""
        if self.pipeline is None or self.engine is None:
            return
        # A device whose room is not known yet (heard only through its availability topic) waits.
        changed = [h for h in self.pipeline.take_dirty() if h.room]
        if not changed:
            return
        engine = self.engine

        def save() -> None:
            with Session(engine) as session, session.begin():
                records.save_device_states(session, states=[_to_record(h) for h in changed])

        await asyncio.to_thread(save)

    async def _warm_up(self, rules: RulesEngine, readings: SqliteReadingStore) -> None:
        """Refill the rules from the store: 30 days of hourly climate (TWPI, mold risk), then the
        latest of every series and 24 h of raw readings where windowed."""
        now = self.clock.now()
        for room, device in rules.climate_sources().items():
            start, end = now - 30 * DAY, now - DAY
            temps = await readings.history(
                device=device, metric="temperature", start=start, end=end, step=3600
            )
            hums = await readings.history(device=device, metric="humidity", start=start, end=end, step=3600)
            rh_at = {p.time: p.mean for p in hums}
            rules.seed_climate(room, [(p.time, p.mean, rh_at[p.time]) for p in temps if p.time in rh_at])
        batch: list[Reading] = list(await readings.latest())
        for device, metric, room in rules.window_series():
            points = await readings.history(device=device, metric=metric, start=now - DAY, end=now)
            batch += [Reading(device, room, metric, p.mean, "", p.time) for p in points]
        batch.sort(key=lambda r: r.time)
        rules.ingest(batch)
        rules.evaluate(now)

    async def tick(self) -> None:
        """Evaluate every room now."""
        if self.rules is not None:
            self.rules.tick()

    async def maintain(self) -> None:
        """Hourly roll-up and retention of raw readings."""
        if self.readings is not None:
            await self.readings.maintain(self.clock.now())

    def app(self) -> FastAPI:
        """The API over this runtime."""
        assert self.pipeline is not None and self.readings is not None
        return create_app(
            AppContext(self.config, self.pipeline, self.readings, self.clock, self.rules, self.alerts)
        )

    async def stop(self) -> None:
        """Stop collecting, write what is buffered, close everything."""
        if self.scheduler is not None and self.scheduler.running:
            # Pause first and let polls in flight finish: shutdown() alone cancels them mid-read.
            self.scheduler.pause()
            await asyncio.sleep(0.2)
            self.scheduler.shutdown(wait=False)
        if self.modbus is not None:
            await self.modbus.close()
        if self.mqtt is not None:
            self.mqtt.pause()  # what arrives from now on stays unacknowledged: the broker keeps it
        if self.pipeline is not None:
            # While MQTT is still connected: store what is buffered and acknowledge it.
            await self.pipeline.stop()
            if self.rules is not None:
                self.rules.evaluate_due()
            await self.save_states()
        if self.mqtt is not None:
            await asyncio.to_thread(self.mqtt.stop)
        if self.alerts is not None:
            await asyncio.to_thread(self.alerts.flush)
        if self.readings is not None:
            await self.readings.close()
        if self.broker is not None:
            await self.broker.stop()
        if self.engine is not None:
            self.engine.dispose()
        log.info("bafang stopped")
