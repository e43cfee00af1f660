"""The composition root: ``build_services(config, clock=…)`` constructs the whole service graph.

It only constructs: nothing connects, opens a file or starts a thread here. service/runtime.py starts
and stops what it built, in order; the API (api/deps.py) hands each service to the routers; tests build
the graph the same way, with a ManualClock and their own client factories, so that wiring cannot
drift between tests and production.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy import Engine

from collectors.modbus import ModbusCollector
from collectors.mqtt import MqttCollector
from core.clock import Clock, SystemClock
from core.config import Config, ModbusDevice, MqttDevice
from rules.engine import RulesEngine, bind_evaluators, stale_windows
from rules.lifecycle import AlertBook
from service.broker import EmbeddedBroker
from store.db import make_engine
from store.ingest import DeviceInfo, Pipeline
from store.sqlite import SqliteReadingStore
from store.writer import RecordsWriter


@dataclass(frozen=True)
class Services:
    """Everything one Bafang process runs, constructed and not yet started."""

    config: Config
    clock: Clock
    records: Engine  # the records database (SQLAlchemy)
    writer: RecordsWriter  # the one thread that writes records
    readings: SqliteReadingStore  # the readings journal and history
    pipeline: Pipeline
    book: AlertBook
    rules: RulesEngine
    scheduler: AsyncIOScheduler
    brokers: tuple[EmbeddedBroker, ...]  # the in-process broker when mqtt.url is "embedded"
    mqtt: tuple[MqttCollector, ...]  # one when any device is on MQTT
    modbus: tuple[ModbusCollector, ...]  # one when any device is on Modbus


def readings_path(config: Config) -> Path:
    """Where the SQLite readings store lives: configured, else beside a SQLite records database."""
    ts = config.storage.timeseries
    if ts.path:
        return Path(ts.path)
    url = config.storage.database
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        return Path(url.removeprefix("sqlite:///")).parent / "readings.db"
    return Path("data") / "readings.db"


def concrete_devices(config: Config) -> list[ModbusDevice | MqttDevice]:
    """Configured devices, less the wildcard entries that stand for devices heard later."""
    return [
        d for d in config.devices if not (isinstance(d, MqttDevice) and d.mqtt.device_id_segment is not None)
    ]


def build_services(
    config: Config,
    *,
    clock: Clock | None = None,
    mqtt_client_factory: Callable[..., paho.Client] | None = None,
    modbus_client_factory: Callable[..., Any] | None = None,
) -> Services:
    """Construct the service graph for a configuration (nothing is started)."""
    clock = clock or SystemClock()
    ts = config.storage.timeseries
    records = make_engine(config.storage.database)
    writer = RecordsWriter(records, clock=clock)
    readings = SqliteReadingStore(readings_path(config), retention_days=ts.retention_days, clock=clock)
    stale = stale_windows(config)
    pipeline = Pipeline(
        readings,
        devices=[DeviceInfo(d.id, d.room, d.protocol, stale.device(d.id)) for d in concrete_devices(config)],
        clock=clock,
        batch_size=ts.batch_size,
        flush_interval=ts.flush_interval,
        max_pending=ts.max_pending,
    )
    book = AlertBook(records, writer, clock=clock)
    rules = RulesEngine(config, book, bind_evaluators(config), clock=clock, offline=pipeline.unavailable)
    pipeline.add_listener(rules.on_readings)  # rules see a reading once it is stored, never before

    mqtt_devices = [d for d in config.devices if isinstance(d, MqttDevice)]
    modbus_devices = [d for d in config.devices if isinstance(d, ModbusDevice)]
    embedded = config.mqtt.url == "embedded"
    brokers = (EmbeddedBroker(),) if embedded else ()
    mqtt: tuple[MqttCollector, ...] = ()
    if mqtt_devices:
        collector = MqttCollector(
            config.mqtt,
            mqtt_devices,
            pipeline,
            clock=clock,
            # The embedded broker's port is known once it listens: the runtime tells the collector then.
            host="127.0.0.1" if embedded else None,
            port=None,
            timezone=config.site.timezone,  # payload times without an offset are site-local
            client_factory=mqtt_client_factory,
            max_clock_skew=config.mqtt.max_clock_skew,
            max_age=ts.retention_days * 86400.0,
        )
        mqtt = (collector,)
    modbus: tuple[ModbusCollector, ...] = ()
    if modbus_devices:
        modbus = (
            ModbusCollector(modbus_devices, pipeline, clock=clock, client_factory=modbus_client_factory),
        )
    return Services(
        config=config,
        clock=clock,
        records=records,
        writer=writer,
        readings=readings,
        pipeline=pipeline,
        book=book,
        rules=rules,
        scheduler=AsyncIOScheduler(timezone=config.site.timezone),
        brokers=brokers,
        mqtt=mqtt,
        modbus=modbus,
    )
