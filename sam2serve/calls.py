"""How each route's request is built: a ``Call`` holds the method, path, query, body and
headers, how long the answer may take, whether a 503 is retried, and how the answer is read
(``sam2serve.answers``). Both clients send the same calls; no I/O happens here.

Where the server has a default (review thresholds, page sizes, the propagation's direction), a
call leaves the value out when the caller gives none, and the server applies its own."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Generic, TypeVar
from urllib.parse import quote

import httpx
from pydantic import TypeAdapter

from sam2serve.answers import as_model, content, field_of, health_of, no_content
from sam2serve.models import (
    RLE,
    ClearResult,
    Direction,
    ExportFormat,
    Health,
    ImageSegmentation,
    MaskPage,
    ModelList,
    ObjectInfo,
    PromptResult,
    PropagationSummary,
    Redetect,
    ReviewFrame,
    Session,
    TextPromptResult,
    Timeline,
)

T = TypeVar("T")
API = "/api/v1"
DEFAULT_URL = "http://127.0.0.1:8000"
NDJSON = "application/x-ndjson"
# A propagation frame carries every object's RLE: allow far more than websockets' 1 MiB.
MAX_MESSAGE_BYTES = 64 * 2**20


def default_url() -> str:
    return os.environ.get("SAM2SERVE_URL", DEFAULT_URL)


def auth_headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


@dataclass
class Call(Generic[T]):
    """One route's request and how to read its answer."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: dict[str, Any] | None = None
    json: Any = None
    files: dict[str, Any] | None = None
    data: dict[str, str] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    long: bool = False  # runs as long as the server's budget allows: no read timeout
    retry: bool = True
    answers: frozenset[int] = frozenset()  # error statuses whose body is the answer itself

    def is_answer(self, response: httpx.Response) -> bool:
        return response.is_success or response.status_code in self.answers

    def request(
        self, http: httpx.Client | httpx.AsyncClient, timeout: httpx.Timeout
    ) -> httpx.Request:
        """A fresh request (a retried upload is read again from the start of its file)."""
        return http.build_request(
            self.method,
            self.path,
            params=_without_none(self.params),
            json=self.json,
            files=self.files,
            data=self.data,
            headers=self.headers,
            timeout=httpx.Timeout(timeout.connect, read=None) if self.long else timeout,
        )


def _without_none(params: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return None if params is None else given(**params)


def given(**values: Any) -> dict[str, Any]:
    """The values that are not None: what is None is left out, for the server's default."""
    return {k: v for k, v in values.items() if v is not None}


def session_path(session_id: str) -> str:
    return f"{API}/sessions/{quote(session_id, safe='')}"


def video_options(
    start_time: float | str | None,
    end_time: float | str | None,
    max_side: int | None,
    frame_stride: int | None,
    model: str | None,
) -> dict[str, Any]:
    return given(
        start_time=start_time,
        end_time=end_time,
        max_side=max_side,
        frame_stride=frame_stride,
        model=model,
    )


def upload_session(upload: IO[bytes], filename: str, options: dict[str, Any]) -> Call[Session]:
    return Call(
        "POST",
        f"{API}/sessions",
        as_model(Session),
        files={"file": (filename, upload, "application/octet-stream")},
        data={k: str(v) for k, v in options.items()},
        long=True,  # the server indexes the video before answering
    )


def server_video_session(video_path: str, options: dict[str, Any]) -> Call[Session]:
    body = {"video_path": video_path, **options}
    return Call("POST", f"{API}/sessions", as_model(Session), json=body, long=True)


def list_sessions() -> Call[list[Session]]:
    return Call("GET", f"{API}/sessions", field_of("sessions", TypeAdapter(list[Session])))


def get_session(session_id: str) -> Call[Session]:
    return Call("GET", session_path(session_id), as_model(Session))


def delete_session(session_id: str) -> Call[None]:
    return Call("DELETE", session_path(session_id), no_content)


def reset_session(session_id: str) -> Call[Session]:
    return Call("POST", f"{session_path(session_id)}/reset", as_model(Session))


def frame_jpeg(session_id: str, frame_index: int, overlay: bool) -> Call[bytes]:
    suffix = "/overlay" if overlay else ""
    return Call("GET", f"{session_path(session_id)}/frames/{frame_index}{suffix}", content)


def prompt_body(
    frame_index: int,
    obj_id: int | None = None,
    points: Sequence[tuple[float, float]] | None = None,
    labels: Sequence[int] | None = None,
    box: tuple[float, float, float, float] | None = None,
    mask: RLE | None = None,
    normalized: bool = False,
    clear_old_points: bool = False,
) -> dict[str, Any]:
    """A prompt as the API takes it; what is None is left out (the server's defaults)."""
    return given(
        frame_index=frame_index,
        obj_id=obj_id,
        points=[list(point) for point in points] if points is not None else None,
        labels=list(labels) if labels is not None else None,
        box=list(box) if box is not None else None,
        mask=mask.model_dump() if mask is not None else None,
        normalized=normalized or None,
        clear_old_points=clear_old_points or None,
    )


def add_prompt(session_id: str, prompt: dict[str, Any]) -> Call[PromptResult]:
    return Call("POST", f"{session_path(session_id)}/prompts", as_model(PromptResult), json=prompt)


def text_query(
    text: str | None,
    exemplar_boxes: Sequence[tuple[float, float, float, float]] | None,
    exemplar_labels: Sequence[int] | None,
) -> dict[str, Any]:
    """A text and its exemplar boxes as the API takes them; what is None is left out."""
    return given(
        text=text,
        exemplar_boxes=[list(b) for b in exemplar_boxes] if exemplar_boxes is not None else None,
        exemplar_labels=list(exemplar_labels) if exemplar_labels is not None else None,
    )


def add_text_prompt(
    session_id: str, frame_index: int, query: dict[str, Any], normalized: bool
) -> Call[TextPromptResult]:
    body = {"frame_index": frame_index, **query, **given(normalized=normalized or None)}
    path = f"{session_path(session_id)}/prompts"
    return Call("POST", path, as_model(TextPromptResult), json=body)


def list_objects(session_id: str) -> Call[list[ObjectInfo]]:
    parse = field_of("objects", TypeAdapter(list[ObjectInfo]))
    return Call("GET", f"{session_path(session_id)}/objects", parse)


def update_object(
    session_id: str, obj_id: int, name: str | None, category: str | None
) -> Call[ObjectInfo]:
    path = f"{session_path(session_id)}/objects/{obj_id}"
    return Call("PATCH", path, as_model(ObjectInfo), json=given(name=name, category=category))


def delete_object(session_id: str, obj_id: int) -> Call[None]:
    return Call("DELETE", f"{session_path(session_id)}/objects/{obj_id}", no_content)


def object_timeline(
    session_id: str, obj_id: int, score_threshold: float | None, iou_threshold: float | None
) -> Call[Timeline]:
    params = {"score_threshold": score_threshold, "iou_threshold": iou_threshold}
    path = f"{session_path(session_id)}/objects/{obj_id}/timeline"
    return Call("GET", path, as_model(Timeline), params=params)


def clear_prompts(session_id: str, frame_index: int, obj_id: int | None) -> Call[ClearResult]:
    path = f"{session_path(session_id)}/frames/{frame_index}/prompts"
    return Call("DELETE", path, as_model(ClearResult), params={"obj_id": obj_id})


def propagation_request(
    direction: Direction | None,
    start_frame_index: int | None,
    max_frames: int | None,
    obj_ids: list[int] | None,
    redetect: Redetect | None = None,
) -> dict[str, Any]:
    return given(
        direction=direction,
        start_frame_index=start_frame_index,
        max_frames=max_frames,
        obj_ids=obj_ids,
        redetect=redetect.model_dump() if redetect is not None else None,
    )


def propagate(session_id: str, request: dict[str, Any], stream: bool) -> Call[PropagationSummary]:
    """JSON mode (the summary when done) or, with ``stream``, NDJSON (read line by line)."""
    accept = NDJSON if stream else "application/json"
    return Call(
        "POST",
        f"{session_path(session_id)}/propagate",
        as_model(PropagationSummary),
        json=request,
        headers={"accept": accept},
        long=True,
    )


def cancel_propagation(session_id: str) -> Call[bool]:
    parse = field_of("cancelled", TypeAdapter(bool))
    return Call("POST", f"{session_path(session_id)}/propagate/cancel", parse)


def masks_page(
    session_id: str,
    start: int | None,
    end: int | None,
    obj_id: int | None,
    limit: int | None,
) -> Call[MaskPage]:
    params = {"start": start, "end": end, "obj_id": obj_id, "limit": limit}
    return Call("GET", f"{session_path(session_id)}/masks", as_model(MaskPage), params=params)


def review(
    session_id: str, score_threshold: float | None, iou_threshold: float | None
) -> Call[list[ReviewFrame]]:
    params = {"score_threshold": score_threshold, "iou_threshold": iou_threshold}
    parse = field_of("frames", TypeAdapter(list[ReviewFrame]))
    return Call("GET", f"{session_path(session_id)}/review", parse, params=params)


def export(session_id: str, format: ExportFormat, obj_id: int | None) -> Call[None]:
    params = {"format": format, "obj_id": obj_id}
    path = f"{session_path(session_id)}/export"
    return Call("GET", path, no_content, params=params, long=True)


def track(
    upload: IO[bytes], filename: str, frame_idx: int, points: list[str], labels: str | None
) -> Call[None]:
    params = {"frame_idx": frame_idx, "points": points, "labels": labels}
    files = {"video": (filename, upload, "application/octet-stream")}
    return Call("POST", "/track", no_content, params=params, files=files, long=True)


def track_query(
    points: Sequence[tuple[float, float]], labels: Sequence[int] | None
) -> tuple[list[str], str | None]:
    """``/track``'s query values: each point as ``x,y``, the labels as ``1,0,...``."""
    xy = [f"{x:g},{y:g}" for x, y in points]
    return xy, ",".join(str(label) for label in labels) if labels is not None else None


def image_bytes(image: bytes | str | Path) -> tuple[bytes, str]:
    """An image's bytes and a file name for the form (images are small: read whole)."""
    if isinstance(image, bytes):
        return image, "image"
    path = Path(image)
    return path.read_bytes(), path.name


def segment_image(image: bytes, filename: str, prompt: dict[str, Any]) -> Call[ImageSegmentation]:
    """``prompt`` as ``prompt_body`` makes it; the image route takes no frame or object."""
    body = {k: v for k, v in prompt.items() if k not in ("frame_index", "obj_id")}
    return Call(
        "POST",
        f"{API}/image/segment",
        as_model(ImageSegmentation),
        files={"file": (filename, image, "application/octet-stream")},
        data={"prompts": json.dumps(body)},
    )


def health() -> Call[Health]:
    """A 503 here is a report (no replica ready yet), not an error, and is not retried."""
    return Call("GET", "/health", health_of, retry=False, answers=frozenset({503}))


def models() -> Call[ModelList]:
    return Call("GET", f"{API}/models", as_model(ModelList))


def websocket_url(base_url: httpx.URL, session_id: str) -> str:
    scheme = "wss" if base_url.scheme == "https" else "ws"
    base = str(base_url.copy_with(scheme=scheme)).rstrip("/")
    return f"{base}{session_path(session_id)}/propagate/ws"
