"""The synchronous client: every route of the sam2-serve HTTP API as a typed method.

Requests and answers are built and read in ``sam2serve.calls`` (shared with ``AsyncClient``);
this module only sends them, retries 503s as the server asks, and streams bodies."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from itertools import chain
from pathlib import Path
from types import TracebackType
from typing import TypeVar

import httpx
from websockets.exceptions import InvalidStatus, WebSocketException
from websockets.sync.client import ClientConnection, connect

from sam2serve import calls
from sam2serve.calls import Call, OnRetry, Progress, Retries, RetryPolicy
from sam2serve.errors import APIError, TransportError, error_for
from sam2serve.models import (
    RLE,
    ClearResult,
    Direction,
    ExportFormat,
    FrameMasks,
    Health,
    ImageSegmentation,
    MaskPage,
    ModelList,
    ObjectInfo,
    PromptResult,
    PropagationSummary,
    ReviewFrame,
    Session,
    Timeline,
)
from sam2serve.transfers import Download, ProgressReader, content_length

T = TypeVar("T")
Event = FrameMasks | PropagationSummary
# A propagation frame carries every object's RLE: allow far more than websockets' 1 MiB.
MAX_MESSAGE_BYTES = 64 * 2**20


class PropagationStream:
    """The frames of a running propagation, in the order the server computes them (``both``:
    forward from the start frame, then backward). ``summary`` is set once the last frame has
    been read. Closing it early (``break`` inside ``with``, or ``close()``) makes the server
    stop after the frame it is computing; the frames computed so far stay stored."""

    def __init__(self, events: Iterator[Event], close: Callable[[], None]) -> None:
        self.summary: PropagationSummary | None = None
        self._close = close
        self._frames = self._read(events)

    def _read(self, events: Iterator[Event]) -> Iterator[FrameMasks]:
        try:
            for event in events:
                if isinstance(event, PropagationSummary):
                    self.summary = event
                    return
                yield event
        except (httpx.TransportError, WebSocketException, OSError) as exc:
            raise TransportError(f"the propagation stream broke: {exc}") from exc
        finally:
            self._close()
        raise TransportError("the propagation stream ended before its summary")

    def __iter__(self) -> Iterator[FrameMasks]:
        return self._frames

    def __next__(self) -> FrameMasks:
        return next(self._frames)

    def close(self) -> None:
        self._frames.close()
        self._close()

    def __enter__(self) -> PropagationStream:
        return self

    def __exit__(
        self,
        error_type: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class Client:
    """A sam2-serve server at ``url`` (default ``$SAM2SERVE_URL``, else http://127.0.0.1:8000;
    the server's root, not ``/api/v1``).

    ``api_key`` (default ``$SAM2SERVE_API_KEY``) is sent as ``Authorization: Bearer``. A 503
    (no free session slot, a session being rebuilt) is retried after the server's
    ``Retry-After`` under ``retry``; ``on_retry`` hears of each retry before its wait.
    ``timeout`` bounds connecting and each read of ordinary calls; uploads, propagations,
    exports and ``/track`` wait as long as the server's own budget for them."""

    def __init__(
        self,
        url: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        on_retry: OnRetry | None = None,
    ) -> None:
        self.base_url = httpx.URL(url or calls.default_url())
        self.retry = retry or RetryPolicy()
        self.on_retry = on_retry
        self.timeout = httpx.Timeout(timeout, connect=min(timeout, 10.0))
        key = api_key if api_key is not None else os.environ.get("SAM2SERVE_API_KEY")
        self._auth = calls.auth_headers(key)
        self._http = httpx.Client(base_url=self.base_url, headers=self._auth, timeout=self.timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        error_type: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # ---- sessions ----------------------------------------------------------------------------

    def create_session(
        self,
        video: str | Path,
        *,
        start_time: float | str | None = None,
        end_time: float | str | None = None,
        max_side: int | None = None,
        frame_stride: int | None = None,
        model: str | None = None,
        progress: Progress | None = None,
    ) -> Session:
        """Upload a local video, streamed from disk; ``progress(bytes_sent, total)``."""
        options = calls.video_options(start_time, end_time, max_side, frame_stride, model)
        path = Path(video)
        with path.open("rb") as file:
            upload = ProgressReader(file, progress)
            return self._run(calls.upload_session(upload, path.name, options))

    def create_session_from_server(
        self,
        video_path: str,
        *,
        start_time: float | str | None = None,
        end_time: float | str | None = None,
        max_side: int | None = None,
        frame_stride: int | None = None,
        model: str | None = None,
    ) -> Session:
        """A session on a video already on the server, relative to its ``VIDEO_ROOT``."""
        options = calls.video_options(start_time, end_time, max_side, frame_stride, model)
        return self._run(calls.server_video_session(video_path, options))

    def list_sessions(self) -> list[Session]:
        return self._run(calls.list_sessions())

    def get_session(self, session_id: str) -> Session:
        return self._run(calls.get_session(session_id))

    def delete_session(self, session_id: str) -> None:
        self._run(calls.delete_session(session_id))

    def reset_session(self, session_id: str) -> Session:
        return self._run(calls.reset_session(session_id))

    def frame_jpeg(self, session_id: str, frame_index: int) -> bytes:
        """The processed frame (frame space) as JPEG bytes."""
        return self._run(calls.frame_jpeg(session_id, frame_index, overlay=False))

    def overlay_jpeg(self, session_id: str, frame_index: int) -> bytes:
        """The frame with the current masks drawn, as JPEG bytes."""
        return self._run(calls.frame_jpeg(session_id, frame_index, overlay=True))

    # ---- prompts and objects -----------------------------------------------------------------

    def add_prompt(
        self,
        session_id: str,
        frame_index: int,
        *,
        obj_id: int | None = None,
        points: Sequence[tuple[float, float]] | None = None,
        labels: Sequence[int] | None = None,
        box: tuple[float, float, float, float] | None = None,
        mask: RLE | None = None,
        normalized: bool = False,
        clear_old_points: bool = False,
    ) -> PromptResult:
        """Points (labels 1/0), a box and/or a mask for one object (``obj_id`` None: a new
        one); the answer holds every object's mask on that frame."""
        body = calls.prompt_body(
            frame_index, obj_id, points, labels, box, mask, normalized, clear_old_points
        )
        return self._run(calls.add_prompt(session_id, body))

    def clear_prompts(
        self, session_id: str, frame_index: int, obj_id: int | None = None
    ) -> ClearResult:
        return self._run(calls.clear_prompts(session_id, frame_index, obj_id))

    def list_objects(self, session_id: str) -> list[ObjectInfo]:
        return self._run(calls.list_objects(session_id))

    def update_object(
        self,
        session_id: str,
        obj_id: int,
        *,
        name: str | None = None,
        category: str | None = None,
    ) -> ObjectInfo:
        return self._run(calls.update_object(session_id, obj_id, name, category))

    def delete_object(self, session_id: str, obj_id: int) -> None:
        self._run(calls.delete_object(session_id, obj_id))

    def object_timeline(
        self,
        session_id: str,
        obj_id: int,
        *,
        score_threshold: float | None = None,
        iou_threshold: float | None = None,
    ) -> Timeline:
        """Runs of frames with the object's mask, its prompted frames and its review marks
        (thresholds as ``review``'s; None: the server's defaults)."""
        call = calls.object_timeline(session_id, obj_id, score_threshold, iou_threshold)
        return self._run(call)

    # ---- propagation -------------------------------------------------------------------------

    def propagate(
        self,
        session_id: str,
        *,
        direction: Direction = "both",
        start_frame_index: int | None = None,
        max_frames: int | None = None,
        obj_ids: list[int] | None = None,
    ) -> PropagationSummary:
        """Propagate and wait for the summary; read the masks with ``iter_masks``."""
        request = calls.propagation_request(direction, start_frame_index, max_frames, obj_ids)
        return self._run(calls.propagate(session_id, request, stream=False))

    def propagate_stream(
        self,
        session_id: str,
        *,
        direction: Direction = "both",
        start_frame_index: int | None = None,
        max_frames: int | None = None,
        obj_ids: list[int] | None = None,
        transport: str = "ndjson",
    ) -> PropagationStream:
        """Start a propagation and iterate its frames as they are computed, over the NDJSON
        stream or the WebSocket (``transport="websocket"``). Errors before the first frame
        (409 while another propagation runs, 422) are raised here; a failure later is raised
        by the iteration."""
        request = calls.propagation_request(direction, start_frame_index, max_frames, obj_ids)
        if transport == "websocket":
            return self._websocket_stream(session_id, request)
        if transport != "ndjson":
            raise ValueError(f"transport is 'ndjson' or 'websocket', not {transport!r}")
        stack = ExitStack()
        response = stack.enter_context(self._open(calls.propagate(session_id, request, True)))
        events = (calls.event_of(line) for line in response.iter_lines() if line.strip())
        return PropagationStream(events, stack.close)

    def cancel_propagation(self, session_id: str) -> bool:
        """Stop the running propagation after its current frame; False when none runs."""
        return self._run(calls.cancel_propagation(session_id))

    # ---- masks and exports -------------------------------------------------------------------

    def masks(
        self,
        session_id: str,
        *,
        start: int | None = None,
        end: int | None = None,
        obj_id: int | None = None,
        limit: int | None = None,
    ) -> MaskPage:
        """One page of masks (frames ``start..end`` inclusive that have one); ``next_start``
        says where the next page begins."""
        return self._run(calls.masks_page(session_id, start, end, obj_id, limit))

    def iter_masks(
        self,
        session_id: str,
        *,
        start: int | None = None,
        end: int | None = None,
        obj_id: int | None = None,
        page_size: int | None = None,
    ) -> Iterator[FrameMasks]:
        """Every frame with a mask in the range, page after page, never all in memory."""
        while True:
            page = self.masks(session_id, start=start, end=end, obj_id=obj_id, limit=page_size)
            yield from page.frames
            if page.next_start is None:
                return
            start = page.next_start

    def review(
        self, session_id: str, *, score_threshold: float = 0.5, iou_threshold: float = 0.5
    ) -> list[ReviewFrame]:
        """Frames worth a look, worst first."""
        return self._run(calls.review(session_id, score_threshold, iou_threshold))

    def export(
        self,
        session_id: str,
        format: ExportFormat,
        target: str | Path,
        *,
        obj_id: int | None = None,
        progress: Progress | None = None,
    ) -> Path:
        """Download an export (coco, png_zip, davis, mp4) to ``target``, streamed to disk;
        ``progress(bytes_received, total)``."""
        return self._download(calls.export(session_id, format, obj_id), Path(target), progress)

    # ---- one-shot calls ----------------------------------------------------------------------

    def track(
        self,
        video: str | Path,
        target: str | Path,
        *,
        frame_idx: int,
        points: Sequence[tuple[float, float]],
        labels: Sequence[int] | None = None,
        upload_progress: Progress | None = None,
        download_progress: Progress | None = None,
    ) -> Path:
        """``POST /track``: the ZIP of one PNG mask per frame at source size, to ``target``."""
        path = Path(video)
        with path.open("rb") as file:
            upload = ProgressReader(file, upload_progress)
            call = calls.track(upload, path.name, frame_idx, *calls.track_query(points, labels))
            return self._download(call, Path(target), download_progress)

    def segment_image(
        self,
        image: bytes | str | Path,
        *,
        points: Sequence[tuple[float, float]] | None = None,
        labels: Sequence[int] | None = None,
        box: tuple[float, float, float, float] | None = None,
        normalized: bool = False,
    ) -> ImageSegmentation:
        """Masks with scores for one image (bytes, or a file's path)."""
        data, name = calls.image_bytes(image)
        prompt = calls.prompt_body(0, None, points, labels, box, None, normalized)
        return self._run(calls.segment_image(data, name, prompt))

    # ---- service -----------------------------------------------------------------------------

    def health(self) -> Health:
        """The service's report; ``ready`` is False (not an error) while no replica is up."""
        return self._run(calls.health())

    def models(self) -> ModelList:
        return self._run(calls.models())

    # ---- plumbing ----------------------------------------------------------------------------

    def _run(self, call: Call[T]) -> T:
        with self._open(call) as response:
            response.read()
            return call.parse(response)

    @contextmanager
    def _open(self, call: Call[object]) -> Iterator[httpx.Response]:
        """The answer's response, its body not yet read; 503s retried, other errors raised."""
        retries = Retries(self.retry if call.retry else calls.NO_RETRY, self.on_retry)
        while True:
            response = self._send(call)
            if call.is_answer(response):
                break
            try:
                response.read()
            finally:
                response.close()
            time.sleep(retries.delay_after(calls.error_of(response)))
        try:
            yield response
        except httpx.TransportError as exc:
            raise TransportError(f"the answer from {self.base_url} broke off: {exc}") from exc
        finally:
            response.close()

    def _send(self, call: Call[object]) -> httpx.Response:
        try:
            return self._http.send(call.request(self._http, self.timeout), stream=True)
        except httpx.TransportError as exc:
            raise TransportError(f"cannot reach {self.base_url}: {exc}") from exc

    def _download(self, call: Call[None], target: Path, progress: Progress | None) -> Path:
        with (
            self._open(call) as response,
            Download(target, content_length(response.headers), progress) as download,
        ):
            for chunk in response.iter_bytes():
                download.write(chunk)
        return target

    def _websocket_stream(self, session_id: str, request: dict) -> PropagationStream:
        """Connect, send the request and read the first event; a 503 before the first frame
        (the server closes with 4503) is retried like an HTTP 503."""
        retries = Retries(self.retry, self.on_retry)
        url = calls.websocket_url(self.base_url, session_id)
        while True:
            stack = ExitStack()  # the connection as a context, as websockets asks
            socket = stack.enter_context(self._connect(url))
            try:
                socket.send(json.dumps(request))
                first = calls.event_of(socket.recv())
            except APIError as error:
                stack.close()
                time.sleep(retries.delay_after(error))
                continue
            except (WebSocketException, OSError) as exc:
                stack.close()
                raise TransportError(f"the propagation WebSocket broke: {exc}") from exc
            events = chain([first], (calls.event_of(message) for message in socket))
            return PropagationStream(events, stack.close)

    def _connect(self, url: str) -> ClientConnection:
        """The open connection (not yet entered as a context)."""
        try:
            return connect(
                url,
                additional_headers=self._auth,
                max_size=MAX_MESSAGE_BYTES,
                open_timeout=self.timeout.connect,
            )
        except InvalidStatus as exc:
            response = exc.response
            raise error_for(
                response.status_code, "http_error", response.body.decode(errors="replace")[:200]
            ) from exc
        except (WebSocketException, OSError, TimeoutError) as exc:
            raise TransportError(f"cannot reach {url}: {exc}") from exc
