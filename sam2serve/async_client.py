"""The asyncio client: ``Client``'s methods as coroutines, for services and notebooks that run
an event loop. Requests and answers come from ``sam2serve.calls``, as for ``Client``."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import TypeVar

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus, WebSocketException

from sam2serve import calls
from sam2serve.calls import Call, OnRetry, Progress, Retries, RetryPolicy
from sam2serve.client import MAX_MESSAGE_BYTES, Event
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


class AsyncPropagationStream:
    """``PropagationStream`` for ``async for``: frames as computed, ``summary`` at the end;
    ``aclose()`` (or leaving ``async with``) stops the propagation after its current frame."""

    def __init__(self, events: AsyncIterator[Event], close: Callable[[], Awaitable[None]]) -> None:
        self.summary: PropagationSummary | None = None
        self._close = close
        self._frames = self._read(events)

    async def _read(self, events: AsyncIterator[Event]) -> AsyncIterator[FrameMasks]:
        try:
            async for event in events:
                if isinstance(event, PropagationSummary):
                    self.summary = event
                    return
                yield event
        except (httpx.TransportError, WebSocketException, OSError) as exc:
            raise TransportError(f"the propagation stream broke: {exc}") from exc
        finally:
            await self._close()
        raise TransportError("the propagation stream ended before its summary")

    def __aiter__(self) -> AsyncIterator[FrameMasks]:
        return self._frames

    async def aclose(self) -> None:
        await self._frames.aclose()
        await self._close()

    async def __aenter__(self) -> AsyncPropagationStream:
        return self

    async def __aexit__(
        self,
        error_type: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()


class AsyncClient:
    """``Client`` for asyncio: the same arguments, methods and results, awaited."""

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
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=self._auth, timeout=self.timeout
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        error_type: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    # ---- sessions ----------------------------------------------------------------------------

    async def create_session(
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
            return await self._run(calls.upload_session(upload, path.name, options))

    async def create_session_from_server(
        self,
        video_path: str,
        *,
        start_time: float | str | None = None,
        end_time: float | str | None = None,
        max_side: int | None = None,
        frame_stride: int | None = None,
        model: str | None = None,
    ) -> Session:
        options = calls.video_options(start_time, end_time, max_side, frame_stride, model)
        return await self._run(calls.server_video_session(video_path, options))

    async def list_sessions(self) -> list[Session]:
        return await self._run(calls.list_sessions())

    async def get_session(self, session_id: str) -> Session:
        return await self._run(calls.get_session(session_id))

    async def delete_session(self, session_id: str) -> None:
        await self._run(calls.delete_session(session_id))

    async def reset_session(self, session_id: str) -> Session:
        return await self._run(calls.reset_session(session_id))

    async def frame_jpeg(self, session_id: str, frame_index: int) -> bytes:
        return await self._run(calls.frame_jpeg(session_id, frame_index, overlay=False))

    async def overlay_jpeg(self, session_id: str, frame_index: int) -> bytes:
        return await self._run(calls.frame_jpeg(session_id, frame_index, overlay=True))

    # ---- prompts and objects -----------------------------------------------------------------

    async def add_prompt(
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
        body = calls.prompt_body(
            frame_index, obj_id, points, labels, box, mask, normalized, clear_old_points
        )
        return await self._run(calls.add_prompt(session_id, body))

    async def clear_prompts(
        self, session_id: str, frame_index: int, obj_id: int | None = None
    ) -> ClearResult:
        return await self._run(calls.clear_prompts(session_id, frame_index, obj_id))

    async def list_objects(self, session_id: str) -> list[ObjectInfo]:
        return await self._run(calls.list_objects(session_id))

    async def update_object(
        self,
        session_id: str,
        obj_id: int,
        *,
        name: str | None = None,
        category: str | None = None,
    ) -> ObjectInfo:
        return await self._run(calls.update_object(session_id, obj_id, name, category))

    async def delete_object(self, session_id: str, obj_id: int) -> None:
        await self._run(calls.delete_object(session_id, obj_id))

    async def object_timeline(
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
        return await self._run(call)

    # ---- propagation -------------------------------------------------------------------------

    async def propagate(
        self,
        session_id: str,
        *,
        direction: Direction = "both",
        start_frame_index: int | None = None,
        max_frames: int | None = None,
        obj_ids: list[int] | None = None,
    ) -> PropagationSummary:
        request = calls.propagation_request(direction, start_frame_index, max_frames, obj_ids)
        return await self._run(calls.propagate(session_id, request, stream=False))

    async def propagate_stream(
        self,
        session_id: str,
        *,
        direction: Direction = "both",
        start_frame_index: int | None = None,
        max_frames: int | None = None,
        obj_ids: list[int] | None = None,
        transport: str = "ndjson",
    ) -> AsyncPropagationStream:
        """As ``Client.propagate_stream``: ``async for frame in await c.propagate_stream()``."""
        request = calls.propagation_request(direction, start_frame_index, max_frames, obj_ids)
        if transport == "websocket":
            return await self._websocket_stream(session_id, request)
        if transport != "ndjson":
            raise ValueError(f"transport is 'ndjson' or 'websocket', not {transport!r}")
        stack = AsyncExitStack()
        call = calls.propagate(session_id, request, stream=True)
        response = await stack.enter_async_context(self._open(call))

        async def events() -> AsyncIterator[Event]:
            async for line in response.aiter_lines():
                if line.strip():
                    yield calls.event_of(line)

        return AsyncPropagationStream(events(), stack.aclose)

    async def cancel_propagation(self, session_id: str) -> bool:
        return await self._run(calls.cancel_propagation(session_id))

    # ---- masks and exports -------------------------------------------------------------------

    async def masks(
        self,
        session_id: str,
        *,
        start: int | None = None,
        end: int | None = None,
        obj_id: int | None = None,
        limit: int | None = None,
    ) -> MaskPage:
        return await self._run(calls.masks_page(session_id, start, end, obj_id, limit))

    async def iter_masks(
        self,
        session_id: str,
        *,
        start: int | None = None,
        end: int | None = None,
        obj_id: int | None = None,
        page_size: int | None = None,
    ) -> AsyncIterator[FrameMasks]:
        """Every frame with a mask in the range, page after page."""
        while True:
            page = await self.masks(
                session_id, start=start, end=end, obj_id=obj_id, limit=page_size
            )
            for frame in page.frames:
                yield frame
            if page.next_start is None:
                return
            start = page.next_start

    async def review(
        self, session_id: str, *, score_threshold: float = 0.5, iou_threshold: float = 0.5
    ) -> list[ReviewFrame]:
        return await self._run(calls.review(session_id, score_threshold, iou_threshold))

    async def export(
        self,
        session_id: str,
        format: ExportFormat,
        target: str | Path,
        *,
        obj_id: int | None = None,
        progress: Progress | None = None,
    ) -> Path:
        call = calls.export(session_id, format, obj_id)
        return await self._download(call, Path(target), progress)

    # ---- one-shot calls ----------------------------------------------------------------------

    async def track(
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
        path = Path(video)
        with path.open("rb") as file:
            upload = ProgressReader(file, upload_progress)
            call = calls.track(upload, path.name, frame_idx, *calls.track_query(points, labels))
            return await self._download(call, Path(target), download_progress)

    async def segment_image(
        self,
        image: bytes | str | Path,
        *,
        points: Sequence[tuple[float, float]] | None = None,
        labels: Sequence[int] | None = None,
        box: tuple[float, float, float, float] | None = None,
        normalized: bool = False,
    ) -> ImageSegmentation:
        data, name = calls.image_bytes(image)
        prompt = calls.prompt_body(0, None, points, labels, box, None, normalized)
        return await self._run(calls.segment_image(data, name, prompt))

    # ---- service -----------------------------------------------------------------------------

    async def health(self) -> Health:
        return await self._run(calls.health())

    async def models(self) -> ModelList:
        return await self._run(calls.models())

    # ---- plumbing ----------------------------------------------------------------------------

    async def _run(self, call: Call[T]) -> T:
        async with self._open(call) as response:
            await response.aread()
            return call.parse(response)

    @asynccontextmanager
    async def _open(self, call: Call[object]) -> AsyncIterator[httpx.Response]:
        retries = Retries(self.retry if call.retry else calls.NO_RETRY, self.on_retry)
        while True:
            response = await self._send(call)
            if call.is_answer(response):
                break
            try:
                await response.aread()
            finally:
                await response.aclose()
            await asyncio.sleep(retries.delay_after(calls.error_of(response)))
        try:
            yield response
        except httpx.TransportError as exc:
            raise TransportError(f"the answer from {self.base_url} broke off: {exc}") from exc
        finally:
            await response.aclose()

    async def _send(self, call: Call[object]) -> httpx.Response:
        try:
            return await self._http.send(call.request(self._http, self.timeout), stream=True)
        except httpx.TransportError as exc:
            raise TransportError(f"cannot reach {self.base_url}: {exc}") from exc

    async def _download(self, call: Call[None], target: Path, progress: Progress | None) -> Path:
        async with self._open(call) as response:
            with Download(target, content_length(response.headers), progress) as download:
                async for chunk in response.aiter_bytes():
                    download.write(chunk)
        return target

    async def _websocket_stream(self, session_id: str, request: dict) -> AsyncPropagationStream:
        retries = Retries(self.retry, self.on_retry)
        url = calls.websocket_url(self.base_url, session_id)
        while True:
            socket = await self._connect(url)
            try:
                await socket.send(json.dumps(request))
                first = calls.event_of(await socket.recv())
            except APIError as error:
                await socket.close()
                await asyncio.sleep(retries.delay_after(error))
                continue
            except (WebSocketException, OSError) as exc:
                await socket.close()
                raise TransportError(f"the propagation WebSocket broke: {exc}") from exc
            return AsyncPropagationStream(_socket_events(first, socket), socket.close)

    async def _connect(self, url: str) -> ClientConnection:
        try:
            return await connect(
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


async def _socket_events(first: Event, socket: ClientConnection) -> AsyncIterator[Event]:
    yield first
    async for message in socket:
        yield calls.event_of(message)
