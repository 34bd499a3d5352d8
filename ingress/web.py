"""The annotation web page (``ingress/static/``), served by the ingress at ``/``.

Plain files with no build step. They hold no data, so they stay open when API keys are on:
the page asks for the key and sends it on every API call (contract, Additions). The server's
values the page shares (the ``overlay_alpha`` setting) are written into ``index.html``'s
``<meta>`` tags as it is served, never copied into the scripts."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from deployments.protocol import ServiceSettings

STATIC_DIR = Path(__file__).parent / "static"


def install(app: FastAPI) -> None:
    """``GET /`` (the page) and ``/static/...`` (its scripts and styles), outside the OpenAPI
    schema: they are not part of the API."""
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_api_route("/", _page, methods=["GET"], include_in_schema=False)


async def _page(request: Request) -> Response:
    """The page. Its URLs are relative, so it works under a route prefix; asked for without
    the trailing slash (``/prefix``), it redirects to ``/prefix/`` so that they resolve there."""
    if not request.url.path.endswith("/"):
        return RedirectResponse(request.url.replace(path=request.url.path + "/"))
    settings = _settings(request)
    page = (STATIC_DIR / "index.html").read_text()
    page = page.replace("{{overlay_alpha}}", f"{settings.overlay_alpha:g}")
    return HTMLResponse(page, headers={"Cache-Control": "no-cache"})


def _settings(request: Request) -> ServiceSettings:
    """The service's settings; the defaults for an app without a service (docs, tests)."""
    service = request.app.state.service
    return service.settings if service is not None else ServiceSettings()
