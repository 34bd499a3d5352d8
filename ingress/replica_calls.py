"""The SAM 2 replicas as a ``ReplicaApi``: their Serve handle behind the typed interface.

``replica_api(handle, timeout_s).add_prompt(session_id=..., owner=..., prompt=...)`` is checked
against ``ReplicaApi`` like any call; it sends the request through the session router under the
method's name, waits at most ``timeout_s`` and raises the replica's own errors (Ray's wrappers
unwrapped). The streaming ``propagate`` is opened with ``open_stream``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, cast

from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator

from deployments.protocol import (
    METHODS,
    STREAMING_METHODS,
    DeadlineExceededError,
    PropagationEvent,
    PropagationRequest,
    ReplicaApi,
)
from ingress.errors import unwrap

_UNARY = METHODS - STREAMING_METHODS


def replica_api(replicas: DeploymentHandle, timeout_s: float) -> ReplicaApi:
    """The replicas' unary methods, each call within ``timeout_s`` (``DeadlineExceededError``
    past it)."""
    return cast(ReplicaApi, _HandleCalls(replicas, timeout_s))


class _HandleCalls:
    """Turns ``ReplicaApi`` method calls into Serve calls of the same name."""

    def __init__(self, replicas: DeploymentHandle, timeout_s: float) -> None:
        self._replicas = replicas
        self._timeout_s = timeout_s

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        if name not in _UNARY:
            raise AttributeError(f"ReplicaApi has no unary method {name!r}")
        return partial(self._call, name)

    async def _call(self, method: str, **kwargs: Any) -> Any:
        response = self._replicas.options(method_name=method).remote(**kwargs)
        try:
            return await asyncio.wait_for(response, self._timeout_s)
        except TimeoutError:
            response.cancel()
            raise DeadlineExceededError(
                f"{method} took longer than its {self._timeout_s:g}s budget",
                budget_s=self._timeout_s,
            ) from None
        except Exception as exc:
            error = unwrap(exc)
            if error is exc:
                raise
            raise error from exc


async def open_stream(
    replicas: DeploymentHandle,
    timeout_s: float,
    *,
    session_id: str,
    owner: str,
    request: PropagationRequest,
) -> tuple[PropagationEvent, DeploymentResponseGenerator]:
    """Start ``ReplicaApi.propagate`` on ``owner`` and wait up to ``timeout_s`` for its first
    event, so errors before the first frame raise here; the event and the rest of the stream
    (``cancel()`` stops it on the replica)."""
    method = ReplicaApi.propagate.__name__
    stream = cast(
        DeploymentResponseGenerator,
        replicas.options(method_name=method, stream=True).remote(
            session_id=session_id, owner=owner, request=request
        ),
    )
    try:
        first = await asyncio.wait_for(stream.__anext__(), timeout_s)
    except BaseException as exc:
        stream.cancel()
        error = unwrap(exc)
        if error is exc:
            raise
        raise error from exc
    return first, stream
