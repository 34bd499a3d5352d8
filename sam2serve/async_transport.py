"""How the asyncio client talks to the server: it sends a call, retries it while the server
answers 503 (as ``sam2serve.retry`` decides), reads the answer or streams its body to a file,
and opens a propagation's stream over NDJSON or the WebSocket. ``AsyncClient`` holds the routes
(``sam2serve.async_client``); this is what they share. ``sam2serve/transport.py`` is generated
from this file by ``python scripts/unasync.py``: edit this file and run the script."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import TypeVar

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus, WebSocketException

from sam2serve import answers, calls
from sam2serve.answers import Event
from sam2serve.calls import Call
from sam2serve.errors import APIError, TransportError, error_for
from sam2serve.models import FrameMasks, ObjectAdded, PropagationSummary
from sam2serve.retry import NO_RETRY, OnRetry, Retries, RetryPolicy
from sam2serve.transfers import Download, Progress, content_length

T = TypeVar("T")


class AsyncPropagationStream:
    """The frames of a running propagation, in the order the server computes them (``both``:
    forward from the start frame, then backward): ``async for frame in stream``. ``summary``
    is set once the last frame has been read. With re-detection, ``objects_added`` lists the
    objects it started so far: those of a frame are there when the frame is. Closing it early
    (``break`` inside ``async with``, or ``aclose()``) makes the server stop after the frame it
    is computing; the frames computed so far stay stored."""

    def __init__(self, events: AsyncIterator[Event], close: Callable[[], Awaitable[None]]) -> None:
        self.summary: PropagationSummary | None = None
        self.objects_added: list[ObjectAdded] = []
        self._close = close
        self._frames = self._read(events)

    async def _read(self, events: AsyncIterator[Event]) -> AsyncIterator[FrameMasks]:
        try:
            async for event in events:
                if isinstance(event, PropagationSummary):
                    self.summary = event
                    return
                if isinstance(event, ObjectAdded):
                    self.objects_added.append(event)
                    continue
                yield event
        except (httpx.TransportError, WebSocketException, OSError) as exc:
            raise TransportError(f"the propagation stream broke: {exc}") from exc
        finally:
            await self._close()
        raise TransportError("the propagation stream ended before its summary")

    def __aiter__(self) -> AsyncIterator[FrameMasks]:
        return self._frames

    async def __anext__(self) -> FrameMasks:
        return await anext(self._frames)

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


class AsyncTransport:
    """The connection to one server, its credentials, timeouts and retry policy."""

    def __init__(
        self,
        url: str | None,
        api_key: str | None,
        timeout: float,
        retry: RetryPolicy | None,
        on_retry: OnRetry | None,
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

    async def _run(self, call: Call[T]) -> T:
        async with self._open(call) as response:
            await response.aread()
            return call.parse(response)

    @asynccontextmanager
    async def _open(self, call: Call[object]) -> AsyncIterator[httpx.Response]:
        """The answer's response, its body not yet read; 503s retried, other errors raised."""
        retries = Retries(self.retry if call.retry else NO_RETRY, self.on_retry)
        while True:
            response = await self._send(call)
            if call.is_answer(response):
                break
            try:
                await response.aread()
            finally:
                await response.aclose()
            await asyncio.sleep(retries.delay_after(answers.error_of(response)))
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
            total = content_length(response.headers)
            with Download(target, total, progress) as download:
                async for chunk in response.aiter_bytes():
                    download.write(chunk)
        return target

    async def _ndjson_stream(self, call: Call[object]) -> AsyncPropagationStream:
        """The propagation streamed as NDJSON lines: the response stays open while it is read."""
        stack = AsyncExitStack()
        response = await stack.enter_async_context(self._open(call))
        return AsyncPropagationStream(_line_events(response), stack.aclose)

    async def _websocket_stream(self, session_id: str, request: dict) -> AsyncPropagationStream:
        """Connect, send the request and read the first event; a 503 before the first frame
        (the server closes with 4503) is retried like an HTTP 503."""
        retries = Retries(self.retry, self.on_retry)
        url = calls.websocket_url(self.base_url, session_id)
        while True:
            stack = AsyncExitStack()  # the connection as a context, as websockets asks
            socket = await self._connect(stack, url)
            try:
                await socket.send(json.dumps(request))
                first = answers.event_of(await socket.recv())
            except APIError as error:
                await stack.aclose()
                await asyncio.sleep(retries.delay_after(error))
                continue
            except (WebSocketException, OSError) as exc:
                await stack.aclose()
                raise TransportError(f"the propagation WebSocket broke: {exc}") from exc
            return AsyncPropagationStream(_socket_events(first, socket), stack.aclose)

    async def _connect(self, stack: AsyncExitStack, url: str) -> ClientConnection:
        """The open connection, entered into ``stack`` (which closes it)."""
        try:
            return await stack.enter_async_context(
                connect(
                    url,
                    additional_headers=self._auth,
                    max_size=calls.MAX_MESSAGE_BYTES,
                    open_timeout=self.timeout.connect,
                )
            )
        except InvalidStatus as exc:
            response = exc.response
            raise error_for(
                response.status_code, "http_error", response.body.decode(errors="replace")[:200]
            ) from exc
        except (WebSocketException, OSError, TimeoutError) as exc:
            raise TransportError(f"cannot reach {url}: {exc}") from exc


async def _line_events(response: httpx.Response) -> AsyncIterator[Event]:
    """The events of an NDJSON propagation stream, one a line."""
    async for line in response.aiter_lines():
        if line.strip():
            yield answers.event_of(line)


async def _socket_events(first: Event, socket: ClientConnection) -> AsyncIterator[Event]:
    """The events of a propagation WebSocket, one a message, from the first one read."""
    yield first
    async for message in socket:
        yield answers.event_of(message)
