"""The SAM 2 replicas as a ``ReplicaApi``, and the concept detector as a ``DetectorApi``: their
Serve handles behind the typed interfaces.

``replica_api(handle, timeout_s).add_prompt(session_id=..., owner=..., prompt=...)`` is checked
against ``ReplicaApi`` like any call; it sends the request through the session router under the
method's name, waits at most ``timeout_s`` and raises the replica's own errors (Ray's wrappers
unwrapped). The streaming ``propagate`` is opened with ``open_stream``. ``detector_api`` does the
same for the detector, whose lost replica is ``DetectorLostError`` (never a lost session).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, cast

from ray.exceptions import RayActorError
from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator

from deployments.protocol import (
    DETECTOR_METHODS,
    METHODS,
    STREAMING_METHODS,
    DeadlineExceededError,
    DetectorApi,
    DetectorLostError,
    PropagationRequest,
    ReplicaApi,
)
from deployments.protocol.concepts import PropagationStreamEvent
from ingress.errors import unwrap

_UNARY = METHODS - STREAMING_METHODS


def replica_api(replicas: DeploymentHandle, timeout_s: float) -> ReplicaApi:
    """The replicas' unary methods, each call within ``timeout_s`` (``DeadlineExceededError``
    past it)."""
    return cast(ReplicaApi, _HandleCalls(replicas, timeout_s, _UNARY))


def detector_api(detector: DeploymentHandle, timeout_s: float) -> DetectorApi:
    """The concept detector's methods, each call within ``timeout_s``; a detector replica that
    died meanwhile raises ``DetectorLostError``."""
    return cast(
        DetectorApi, _HandleCalls(detector, timeout_s, DETECTOR_METHODS, lost=_detector_lost)
    )


def _detector_lost() -> Exception:
    return DetectorLostError(
        "the concept detector's replica stopped while answering; send the request again"
    )


class _HandleCalls:
    """Turns typed method calls into Serve calls of the same name, for the ``methods`` of an
    interface. ``lost`` is the error for a replica that died (default: ``errors.unwrap``'s)."""

    def __init__(
        self,
        handle: DeploymentHandle,
        timeout_s: float,
        methods: frozenset[str],
        lost: Callable[[], Exception] | None = None,
    ) -> None:
        self._handle = handle
        self._timeout_s = timeout_s
        self._methods = methods
        self._lost = lost

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        if name.startswith("_") or name not in self._methods:
            raise AttributeError(f"no unary method {name!r}")
        return partial(self._call, name)

    async def _call(self, method: str, **kwargs: Any) -> Any:
        response = self._handle.options(method_name=method).remote(**kwargs)
        try:
            return await asyncio.wait_for(response, self._timeout_s)
        except TimeoutError:
            response.cancel()
            raise DeadlineExceededError(
                f"{method} took longer than its {self._timeout_s:g}s budget",
                budget_s=self._timeout_s,
            ) from None
        except Exception as exc:
            if self._lost is not None and isinstance(exc, RayActorError):
                raise self._lost() from exc
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
) -> tuple[PropagationStreamEvent, DeploymentResponseGenerator]:
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
