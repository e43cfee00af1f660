"""What the routers need: one ``Annotated`` dependency per service of the running graph.

``create_app(services)`` keeps the graph on ``app.state.services`` (a reload swaps it); each alias below
hands one service to a route. The graph is described here by what the API reads of it (``Graph``), so
api/ does not depend on service/, which builds it (service/services.py ``Services``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Protocol
from zoneinfo import ZoneInfo

from fastapi import Depends, Request

from core.clock import Clock
from core.config import Config
from rules.engine import RulesEngine
from rules.lifecycle import AlertBook
from store.ingest import Pipeline
from store.timeseries import ReadingStore
from store.writer import RecordsWriter


class Graph(Protocol):
    """The services the API reads (service.services.Services provides them)."""

    @property
    def config(self) -> Config: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def pipeline(self) -> Pipeline: ...

    @property
    def readings(self) -> ReadingStore: ...

    @property
    def book(self) -> AlertBook: ...

    @property
    def rules(self) -> RulesEngine: ...

    @property
    def writer(self) -> RecordsWriter: ...


def graph(request: Request) -> Graph:
    """The service graph the app serves now."""
    services: Graph = request.app.state.services
    return services


async def _config(request: Request) -> Config:
    return graph(request).config


async def _clock(request: Request) -> Clock:
    return graph(request).clock


async def _pipeline(request: Request) -> Pipeline:
    return graph(request).pipeline


async def _readings(request: Request) -> ReadingStore:
    return graph(request).readings


async def _book(request: Request) -> AlertBook:
    return graph(request).book


async def _rules(request: Request) -> RulesEngine:
    return graph(request).rules


async def _writer(request: Request) -> RecordsWriter:
    return graph(request).writer


# The dependencies are coroutines too: FastAPI would run a plain function in its threadpool.
ConfigDep = Annotated[Config, Depends(_config)]
ClockDep = Annotated[Clock, Depends(_clock)]
PipelineDep = Annotated[Pipeline, Depends(_pipeline)]
ReadingsDep = Annotated[ReadingStore, Depends(_readings)]
BookDep = Annotated[AlertBook, Depends(_book)]
RulesDep = Annotated[RulesEngine, Depends(_rules)]
WriterDep = Annotated[RecordsWriter, Depends(_writer)]


def site_epoch(value: datetime, config: Config) -> float:
    """A time given in a request as epoch seconds; without an offset it is the site's local time.

    One rule everywhere: a time without an offset is read as people in the room read clocks, in the
    site's time zone (site.timezone), as MQTT payload times are (collectors/mqtt.py).
    """
    if value.tzinfo is None:
        value = value.replace(tzinfo=ZoneInfo(config.site.timezone))
    return value.timestamp()
