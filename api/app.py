"""create_app(context): the FastAPI application, its routers and the pages it serves."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from api.deps import AppContext, ContextDep
from api.routers import alerts, devices, protections, readings
from api.schemas import Health


def wall_dir() -> Path:
    """The folder of the wall dashboard's static files (dashboards/wall)."""
    return Path(str(resources.files("dashboards") / "wall"))


def create_app(context: AppContext) -> FastAPI:
    """The API over the given live services."""
    app = FastAPI(
        title="Bafang 八防",
        summary="Archive-room environment, security and dossier monitoring",
        version="0.1.0",
    )
    app.state.context = context

    @app.get("/healthz", response_model=Health, tags=["health"])
    def healthz(ctx: ContextDep) -> Health:
        """200 while the service runs."""
        return Health(readings_pending=ctx.pipeline.pending, readings_stored=ctx.pipeline.stored)

    app.include_router(devices.router)
    app.include_router(readings.router)
    app.include_router(protections.router)
    app.include_router(alerts.router)

    static = wall_dir()
    app.mount("/wall", StaticFiles(directory=static, html=True), name="wall")

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/wall/")

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> FileResponse:
        return FileResponse(static / "favicon.svg", media_type="image/svg+xml")

    return app
