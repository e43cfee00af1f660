"""create_app(services): the FastAPI application, its routers and the pages it serves.

Every route is ``async def``: it runs on the event loop, the one thread that touches the rules engine's
and the alert book's state; whatever waits for a database runs its query on a worker thread.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from api.deps import Graph, PipelineDep, WriterDep
from api.routers import alerts, devices, protections, readings
from api.schemas import Health


def wall_dir() -> Path:
    """The folder of the wall dashboard's static files (dashboards/wall)."""
    return Path(str(resources.files("dashboards") / "wall"))


def create_app(services: Graph) -> FastAPI:
    """The API over the given service graph (``app.state.services``; a reload replaces it)."""
    app = FastAPI(
        title="Bafang 八防",
        summary="Archive-room environment, security and dossier monitoring",
        version="0.1.0",
    )
    app.state.services = services

    @app.get("/healthz", response_model=Health, tags=["health"])
    async def healthz(pipeline: PipelineDep, writer: WriterDep) -> Health:
        """200 while the service runs; what waits to be stored, readings and records."""
        waiting = writer.waiting_for
        return Health(
            readings_pending=pipeline.pending,
            readings_stored=pipeline.stored,
            records_pending=writer.pending,
            records_waiting=round(waiting, 1) if waiting is not None else None,
        )

    app.include_router(devices.router)
    app.include_router(readings.router)
    app.include_router(protections.router)
    app.include_router(alerts.router)

    static = wall_dir()
    app.mount("/wall", StaticFiles(directory=static, html=True), name="wall")

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/wall/")

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> FileResponse:
        return FileResponse(static / "favicon.svg", media_type="image/svg+xml")

    return app
