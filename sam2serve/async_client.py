"""The asyncio client, ``AsyncClient``: every route of the sam2-serve HTTP API as a typed
coroutine method, each a call of ``sam2serve.calls`` sent by ``sam2serve.async_transport``.

The client is written once, for asyncio: ``sam2serve/client.py`` and ``sam2serve/transport.py``
(``Client``) are generated from this file and ``async_transport.py`` by ``python
scripts/unasync.py``. Edit these two and run the script; tests/client/test_unasync.py fails
while a generated file is not current."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from types import TracebackType

from sam2serve import calls
from sam2serve.async_transport import AsyncPropagationStream, AsyncTransport
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
    Redetect,
    ReviewFrame,
    Session,
    TextPromptResult,
    Timeline,
)
from sam2serve.retry import OnRetry, RetryPolicy
from sam2serve.transfers import Progress, ProgressReader


class AsyncClient(AsyncTransport):
    """A sam2-serve server at ``url`` (default ``$SAM2SERVE_URL``, else http://127.0.0.1:8000;
    the server's root, not ``/api/v1``).

    ``api_key`` (default ``$SAM2SERVE_API_KEY``) is sent as ``Authorization: Bearer``. A 503
    (no free session slot, a session being rebuilt) is retried after the server's
    ``Retry-After`` under ``retry``; ``on_retry`` hears of each retry before its wait.
    ``timeout`` bounds connecting and each read of ordinary calls; uploads, propagations,
    exports and ``/track`` wait as long as the server's own budget for them. Where an argument
    is None, the server's default applies."""

    def __init__(
        self,
        url: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        on_retry: OnRetry | None = None,
    ) -> None:
        super().__init__(url, api_key, timeout, retry, on_retry)

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
        """A session on a video already on the server, relative to its ``VIDEO_ROOT``."""
        options = calls.video_options(start_time, end_time, max_side, frame_stride, model)
        return await self._run(calls.server_video_session(video_path, options))

    async def list_sessions(self) -> list[Session]:
        return await self._run(calls.list_sessions())

    async def get_session(self, session_id: str) -> Session:
        return await self._run(calls.get_session(session_id))

    async def delete_session(self, session_id: str) -> None:
        await self._run(calls.delete_session(session_id))

    async def reset_session(self, session_id: str) -> Session:
        """Drop every object, prompt and mask; the video stays."""
        return await self._run(calls.reset_session(session_id))

    async def frame_jpeg(self, session_id: str, frame_index: int) -> bytes:
        """The processed frame (frame space) as JPEG bytes."""
        return await self._run(calls.frame_jpeg(session_id, frame_index, overlay=False))

    async def overlay_jpeg(self, session_id: str, frame_index: int) -> bytes:
        """The frame with the current masks drawn, as JPEG bytes."""
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
        """Points (labels 1/0), a box and/or a mask for one object (``obj_id`` None: a new
        one); the answer holds every object's mask on that frame."""
        body = calls.prompt_body(
            frame_index, obj_id, points, labels, box, mask, normalized, clear_old_points
        )
        return await self._run(calls.add_prompt(session_id, body))

    async def add_text_prompt(
        self,
        session_id: str,
        frame_index: int,
        text: str,
        *,
        exemplar_boxes: Sequence[tuple[float, float, float, float]] | None = None,
        exemplar_labels: Sequence[int] | None = None,
        normalized: bool = False,
    ) -> TextPromptResult:
        """Every instance of ``text`` on the frame (the server's concept detector, optionally
        guided by exemplar boxes labelled 1/0) becomes an object of that category, unless it
        matches one already there; the answer lists them with their detector scores and every
        object's mask on the frame. 409 ``detector_unavailable`` where the server runs no
        detector."""
        query = calls.text_query(text, exemplar_boxes, exemplar_labels)
        return await self._run(calls.add_text_prompt(session_id, frame_index, query, normalized))

    async def clear_prompts(
        self, session_id: str, frame_index: int, obj_id: int | None = None
    ) -> ClearResult:
        """Remove the prompts on one frame (of one object, or of all); the answer holds the
        frame's masks after the change."""
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
        """Name or categorise an object (None: left as it is)."""
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
        (thresholds as ``review``'s)."""
        call = calls.object_timeline(session_id, obj_id, score_threshold, iou_threshold)
        return await self._run(call)

    # ---- propagation -------------------------------------------------------------------------

    async def propagate(
        self,
        session_id: str,
        *,
        direction: Direction | None = None,
        start_frame_index: int | None = None,
        max_frames: int | None = None,
        obj_ids: list[int] | None = None,
        redetect: Redetect | None = None,
    ) -> PropagationSummary:
        """Propagate and wait for the summary; read the masks with ``iter_masks``. The server's
        defaults: both ways, from the earliest prompt, to the ends, every prompted object.
        ``redetect``: find new instances of a text every n frames (new objects)."""
        request = calls.propagation_request(
            direction, start_frame_index, max_frames, obj_ids, redetect
        )
        return await self._run(calls.propagate(session_id, request, stream=False))

    async def propagate_stream(
        self,
        session_id: str,
        *,
        direction: Direction | None = None,
        start_frame_index: int | None = None,
        max_frames: int | None = None,
        obj_ids: list[int] | None = None,
        redetect: Redetect | None = None,
        transport: str = "ndjson",
    ) -> AsyncPropagationStream:
        """Start a propagation (as ``propagate``) and iterate its frames as they are computed,
        ``async for frame in await client.propagate_stream(sid)``, over the NDJSON stream or the
        WebSocket (``transport="websocket"``); objects re-detection starts are in the
        stream's ``objects_added``. Errors before the first frame (409 while another
        propagation runs, 422) are raised here; a failure later is raised by the iteration."""
        request = calls.propagation_request(
            direction, start_frame_index, max_frames, obj_ids, redetect
        )
        if transport == "websocket":
            return await self._websocket_stream(session_id, request)
        if transport != "ndjson":
            raise ValueError(f"transport is 'ndjson' or 'websocket', not {transport!r}")
        return await self._ndjson_stream(calls.propagate(session_id, request, stream=True))

    async def cancel_propagation(self, session_id: str) -> bool:
        """Stop the running propagation after its current frame; False when none runs."""
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
        """One page of masks (frames ``start..end`` inclusive that have one, at most ``limit``
        of them); ``next_start`` says where the next page begins."""
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
        """Every frame with a mask in the range, page after page, never all in memory."""
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
        self,
        session_id: str,
        *,
        score_threshold: float | None = None,
        iou_threshold: float | None = None,
    ) -> list[ReviewFrame]:
        """Frames worth a look, worst first: an object's score below ``score_threshold``, its
        mask's IoU with the previous frame's below ``iou_threshold`` (an area jump), or lost."""
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
        """Download an export (coco, png_zip, davis, mp4) to ``target``, streamed to disk;
        ``progress(bytes_received, total)``."""
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
        """``POST /track``: the ZIP of one PNG mask per frame at source size, to ``target``."""
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
        text: str | None = None,
        exemplar_boxes: Sequence[tuple[float, float, float, float]] | None = None,
        exemplar_labels: Sequence[int] | None = None,
    ) -> ImageSegmentation:
        """Masks with scores for one image (bytes, or a file's path): SAM 2's for points or a
        box (``masks``), and every instance of ``text`` (``instances``, the server's concept
        detector, optionally guided by exemplar boxes)."""
        data, name = calls.image_bytes(image)
        prompt = calls.prompt_body(0, None, points, labels, box, None, normalized)
        prompt |= calls.text_query(text, exemplar_boxes, exemplar_labels)
        return await self._run(calls.segment_image(data, name, prompt))

    # ---- service -----------------------------------------------------------------------------

    async def health(self) -> Health:
        """The service's report; ``ready`` is False (not an error) while no replica is up."""
        return await self._run(calls.health())

    async def models(self) -> ModelList:
        return await self._run(calls.models())
