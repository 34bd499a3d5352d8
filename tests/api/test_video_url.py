"""Sessions from ``{"video_url": "s3://bucket/key"}`` at the HTTP edge: the URL is parsed and
the bucket checked before any replica is asked (422, 403); what reaches the service is the
object's location with the same options as ``video_path``."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from deployments.protocol import NotFoundError, ServiceSettings, VideoOptions
from deployments.protocol.errors import ObjectStoreUnavailableError
from deployments.protocol.locations import ObjectLocation
from ingress.app import create_app
from ingress.errors import error_response

SESSIONS = "/api/v1/sessions"


class RecordingService:
    """The service's ``create`` as the route calls it; it answers as a replica would for an
    object that is not there (404)."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.created: list[tuple[Any, VideoOptions, bool]] = []

    def for_caller(self, _key: str | None) -> RecordingService:
        return self

    async def create(self, video, options, _model, is_upload: bool):
        self.created.append((video, options, is_upload))
        raise NotFoundError(f"no object at {video}")


@pytest.fixture
def http() -> tuple[TestClient, RecordingService]:
    service = RecordingService(ServiceSettings(s3_buckets=["videos"]))
    app = create_app()
    app.state.service = service
    return TestClient(app), service


def test_a_video_url_reaches_the_service_as_a_location_with_its_options(http):
    client, service = http
    body = {"video_url": "s3://videos/or/case 1.mp4", "end_time": 2.5, "frame_stride": 2}
    response = client.post(SESSIONS, json=body)
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    [(video, options, is_upload)] = service.created
    assert video == ObjectLocation("videos", "or/case 1.mp4") and not is_upload
    assert (options.end_time, options.frame_stride) == (2.5, 2)


def test_a_bucket_not_allow_listed_is_forbidden(http):
    client, service = http
    response = client.post(SESSIONS, json={"video_url": "s3://private/a.mp4"})
    assert response.status_code == 403 and response.json()["error"]["code"] == "forbidden_path"
    assert not service.created


@pytest.mark.parametrize("url", ["http://videos/a.mp4", "gs://videos/a.mp4", "s3://videos"])
def test_a_url_other_than_s3_bucket_and_key_is_unprocessable(http, url):
    client, service = http
    response = client.post(SESSIONS, json={"video_url": url})
    assert response.status_code == 422 and not service.created


@pytest.mark.parametrize(
    "body", [{}, {"video_path": "a.mp4", "video_url": "s3://videos/a.mp4"}, {"end_time": 1}]
)
def test_a_body_names_exactly_one_video(http, body):
    client, service = http
    assert client.post(SESSIONS, json=body).status_code == 422 and not service.created


def test_the_schema_documents_video_url():
    spec = create_app().openapi()
    body = spec["paths"][SESSIONS]["post"]["requestBody"]["content"]["application/json"]
    assert {"video_path", "video_url"} <= set(body["schema"]["properties"])


def test_object_store_secrets_come_from_the_environment_and_stay_out_of_dumps(monkeypatch):
    monkeypatch.setenv("SAM2_SERVE_S3_ACCESS_KEY_ID", "key-id")
    monkeypatch.setenv("SAM2_SERVE_S3_SECRET_ACCESS_KEY", "secret")
    settings = ServiceSettings(s3_buckets=["videos"])
    assert settings.s3_secret_access_key.get_secret_value() == "secret"
    dumped = settings.model_dump(mode="json")  # what the builder hands the replicas
    assert "s3_access_key_id" not in dumped and "secret" not in str(dumped)
    with pytest.raises(ValueError, match="s3_secret_access_key"):
        ServiceSettings(s3_secret_access_key="in a config file")


def test_an_object_store_outage_is_503_with_retry_after():
    error = ObjectStoreUnavailableError("the object store did not answer for s3://videos/a.mp4")
    response = error_response(error, retry_after_s=7)
    assert response.status_code == 503 and response.headers["Retry-After"] == "7"
