"""The annotation page is served the server's values it shares (``ingress/web.py``), so the
scripts copy none of them; the page stays outside the OpenAPI schema."""

from __future__ import annotations

from types import SimpleNamespace

from fastapi.testclient import TestClient

from deployments.protocol import ServiceSettings
from ingress.app import create_app
from ingress.web import STATIC_DIR


def page(service: object | None = None) -> str:
    app = create_app()
    app.state.service = service
    response = TestClient(app).get("/")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-cache"
    return response.text


def test_the_page_is_served_the_overlay_alpha_setting():
    configured = SimpleNamespace(settings=ServiceSettings(overlay_alpha=0.3))
    assert '<meta name="overlay-alpha" content="0.3" />' in page(configured)
    default = page()
    assert f'<meta name="overlay-alpha" content="{ServiceSettings().overlay_alpha:g}" />' in default
    assert "{{" not in default


def test_the_page_is_outside_the_schema():
    assert "/" not in create_app().openapi()["paths"]


def test_no_page_module_is_over_300_lines():
    """Each script does one job (issue 20); app.js only wires them."""
    sizes = {path.name: len(path.read_text().splitlines()) for path in STATIC_DIR.glob("*.js")}
    assert "app.js" in sizes
    assert {name: n for name, n in sizes.items() if n > 300} == {}
