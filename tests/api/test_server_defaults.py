"""Values a client may leave out come from the server's settings (review thresholds, the
masks' page size); the OpenAPI schema documents the settings' defaults."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from deployments.protocol import MaskPage, ServiceSettings
from ingress.app import create_app

BASE = "/api/v1/sessions/abcdefgh12345678"


class RecordingService:
    """What the routes under test call, recording what they were given."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.calls: list[tuple[str, Any]] = []

    def for_caller(self, _key: str | None) -> RecordingService:
        return self

    async def review(self, _session_id: str, score: float, iou: float) -> list:
        self.calls.append(("review", (score, iou)))
        return []

    async def masks(self, _session_id: str, _start, _end, _obj_id, limit: int) -> MaskPage:
        self.calls.append(("masks", limit))
        return MaskPage(frames=[], next_start=None)


def client(**settings: Any) -> tuple[TestClient, RecordingService]:
    service = RecordingService(ServiceSettings(**settings))
    app = create_app()
    app.state.service = service
    return TestClient(app), service


def test_review_thresholds_default_to_the_settings():
    http, service = client(review_score_threshold=0.3, review_iou_threshold=0.2)
    assert http.get(f"{BASE}/review").status_code == 200
    assert http.get(f"{BASE}/review", params={"score_threshold": 0.9}).status_code == 200
    assert http.get(f"{BASE}/review", params={"iou_threshold": 0.5}).status_code == 200
    assert service.calls == [("review", (0.3, 0.2)), ("review", (0.9, 0.2)), ("review", (0.3, 0.5))]


def test_the_masks_page_size_defaults_to_the_settings_and_is_capped_by_them():
    http, service = client(masks_page_size=40, masks_page_max=100)
    assert http.get(f"{BASE}/masks").status_code == 200
    assert http.get(f"{BASE}/masks", params={"limit": 100}).status_code == 200
    refused = http.get(f"{BASE}/masks", params={"limit": 101})
    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "validation_error"
    assert "query.limit" in refused.json()["error"]["message"]
    assert service.calls == [("masks", 40), ("masks", 100)]


def test_the_schema_documents_the_settings_defaults():
    defaults = ServiceSettings()
    params = create_app().openapi()["paths"]["/api/v1/sessions/{session_id}/masks"]["get"]
    limit = next(p for p in params["parameters"] if p["name"] == "limit")["schema"]
    assert (limit["default"], limit["maximum"]) == (
        defaults.masks_page_size,
        defaults.masks_page_max,
    )
