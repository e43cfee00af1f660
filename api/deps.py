"""What the routers need, handed in by the runtime (no import-time globals)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from core.clock import Clock
from core.config import Config
from rules.engine import RulesEngine
from rules.lifecycle import AlertBook
from store.ingest import Pipeline
from store.timeseries import ReadingStore


@dataclass(frozen=True)
class AppContext:
    """The live services behind the API."""

    config: Config
    pipeline: Pipeline
    readings: ReadingStore
    clock: Clock
    rules: RulesEngine | None = None
    alerts: AlertBook | None = None


def get_context(request: Request) -> AppContext:
    """The AppContext the app was created with."""
    ctx: AppContext = request.app.state.context
    return ctx


ContextDep = Annotated[AppContext, Depends(get_context)]
