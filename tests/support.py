"""Building the service graph in tests the way production does (service/services.py build_services).

``build`` points a configuration's storage at the test's folder and builds the graph with the test's
clock and client factories; ``opened`` opens its stores (records, writer, readings, pipeline, rules
warmed up) without starting collection, for tests that drive readings and time themselves.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from core.clock import Clock
from core.config import Config, Storage, parse_config
from service import runtime
from service.services import Services, build_services


def with_storage(config: Config | str, folder: Path, **timeseries: Any) -> Config:
    """The configuration with its records and readings in ``folder``."""
    cfg = parse_config(config, environ={}) if isinstance(config, str) else config
    ts = cfg.storage.timeseries.model_copy(update={"path": str(folder / "readings.db"), **timeseries})
    storage = Storage(database=f"sqlite:///{folder / 'bafang.db'}", timeseries=ts)
    return cfg.model_copy(update={"storage": storage})


def build(
    config: Config | str,
    folder: Path,
    *,
    clock: Clock,
    database: str | None = None,
    mqtt_client_factory: Callable[..., Any] | None = None,
    modbus_client_factory: Callable[..., Any] | None = None,
    **timeseries: Any,
) -> Services:
    """The service graph of a configuration, its storage in ``folder`` (or the given records URL)."""
    cfg = with_storage(config, folder, **timeseries)
    if database is not None:
        cfg = cfg.model_copy(update={"storage": cfg.storage.model_copy(update={"database": database})})
    return build_services(
        cfg, clock=clock, mqtt_client_factory=mqtt_client_factory, modbus_client_factory=modbus_client_factory
    )


@contextlib.asynccontextmanager
async def opened(services: Services) -> AsyncIterator[Services]:
    """The graph with its stores open and its rules warmed up, collection not started; stopped after."""
    try:
        await runtime.open_stores(services)
        yield services
    finally:
        await runtime.stop(services)
