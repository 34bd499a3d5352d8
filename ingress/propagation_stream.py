"""A propagation's events, streamed from the session's owner under a propagation lease.

Errors before the first frame raise when the stream starts (so they get their HTTP status),
later ones from the iterator. While frames flow, the lease and the session's TTL are renewed
(expiry counts idle time only); when the stream ends or is closed, the lease is released and
the TTL restarts. A stream abandoned before it started, or an ingress that dies, leaves a lease
that lapses ``lease_s`` after the last frame. An ``object_added`` event (re-detection started
an object) has the object's name kept in the session store before it is passed on, as a text
prompt's are.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from ray.serve.handle import DeploymentResponseGenerator

from deployments.protocol import (
    DeadlineExceededError,
    PropagationRequest,
    SessionUnavailableError,
)
from deployments.protocol.concepts import ObjectAdded, PropagationStreamEvent
from ingress.ownership import Ownership, lease_lost
from ingress.replica_calls import open_stream
from session_store import Lease, SessionRecord, leases

logger = logging.getLogger("ray.serve")
# Keeps the name of an object a propagation's re-detection started: (session id, its event).
OnObjectAdded = Callable[[str, ObjectAdded], Awaitable[None]]


async def start_propagation(
    ownership: Ownership,
    record: SessionRecord,
    request: PropagationRequest,
    on_added: OnObjectAdded,
) -> AsyncIterator[PropagationStreamEvent]:
    """Start the propagation on the owner (rebuilt first if it is gone) and take the
    propagation lease; the events."""
    session_id = record.session_id
    owner = await ownership.owner(record)
    await ownership.expiry.touch(record)
    timeout_s = ownership.settings.request_timeout_s
    replicas = ownership.replicas
    try:
        first, stream = await open_stream(
            replicas, timeout_s, session_id=session_id, owner=owner, request=request
        )
    except SessionUnavailableError:
        owner = await ownership.rebuild(record, lost=owner)
        first, stream = await open_stream(
            replicas, timeout_s, session_id=session_id, owner=owner, request=request
        )
    lease = leases.new_lease("propagating", ownership.settings.lease_s)
    try:
        current, taken = await ownership.store.transition(
            session_id, leases.take_propagation(owner, lease)
        )
        if not taken:
            raise lease_lost(session_id, current)
    except BaseException:
        stream.cancel()
        raise
    return _events(ownership, record, lease, first, stream, on_added)


async def _events(
    ownership: Ownership,
    record: SessionRecord,
    lease: Lease,
    first: PropagationStreamEvent,
    stream: DeploymentResponseGenerator,
    on_added: OnObjectAdded,
) -> AsyncIterator[PropagationStreamEvent]:
    """The propagation's events within its time budget, renewing the lease and the TTL."""
    settings = ownership.settings
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.propagate_timeout_s
    renew_every = min(settings.session_ttl_s / 4, settings.lease_s / 3)
    renewed = loop.time()
    try:
        event = first
        while True:
            if isinstance(event, ObjectAdded):
                await _keep_name(on_added, record.session_id, event)
            yield event
            remaining = deadline - loop.time()
            try:
                event = await asyncio.wait_for(stream.__anext__(), max(remaining, 0))
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise DeadlineExceededError(
                    "the propagation ran past its time budget",
                    budget_s=settings.propagate_timeout_s,
                ) from None
            if loop.time() - renewed >= renew_every:
                lease = await _renew(ownership, record, lease)
                renewed = loop.time()
    finally:
        stream.cancel()
        await ownership.release(record.session_id, lease)
        try:
            await ownership.expiry.touch(record)
        except Exception:  # best effort: the TTL restarts at the next request anyway
            logger.warning(
                "could not restart the TTL of %s after its propagation",
                record.session_id,
                exc_info=True,
            )


async def _keep_name(on_added: OnObjectAdded, session_id: str, event: ObjectAdded) -> None:
    """Best effort: the owner's prompt log holds the name too, and a rebuild takes it from
    there where the store has none."""
    try:
        await on_added(session_id, event)
    except Exception:
        logger.warning(
            "could not keep the name of object %d of %s", event.obj_id, session_id, exc_info=True
        )


async def _renew(ownership: Ownership, record: SessionRecord, lease: Lease) -> Lease:
    """The propagation's lease renewed, and the TTL. Best effort: the frames are the owner's to
    store, so a store that does not answer now stops nothing (its lease may lapse, and the
    session then counts as ready)."""
    extended = leases.renewed(lease, ownership.settings.lease_s)
    try:
        await ownership.expiry.touch(record)
        _, written = await ownership.store.transition(
            record.session_id, leases.extend(extended, record.replica)
        )
    except Exception:
        logger.warning(
            "could not renew the propagation lease of %s", record.session_id, exc_info=True
        )
        return lease
    return extended if written else lease
