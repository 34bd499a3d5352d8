"""Prompt logs: a replica writes each operation its sessions apply to the session store.

Every prompt, clear, removal and reset is appended, numbered, as the engine applies it
(``Session.persist`` hands each entry to ``PromptJournal.append``, on the engine-call thread,
the session's lock held), so the log holds what was applied, in order, and another replica can
rebuild the session from it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from functools import partial

from deployments.protocol import StoreUnavailableError
from session_store import LogEntry, SessionStore

logger = logging.getLogger("ray.serve")


class PromptJournal:
    """Appends to the sessions' prompt logs from engine-call threads, through ``loop`` (the
    replica's event loop, where the store's client lives). An append waits ``timeout_s`` (the
    ``journal_timeout_s`` setting) for the store, the session's lock held: past it the store
    counts as down and the request fails (503) instead."""

    def __init__(
        self, store: SessionStore, loop: asyncio.AbstractEventLoop, timeout_s: float
    ) -> None:
        self._store = store
        self._loop = loop
        self._timeout_s = timeout_s

    def writer(self, session_id: str) -> Callable[[LogEntry], None]:
        """What ``Session.persist`` takes: appends to this session's log."""
        return partial(self.append, session_id)

    def append(self, session_id: str, entry: LogEntry) -> None:
        """Append one applied operation to the session's prompt log; blocks an engine-call
        thread. StoreUnavailableError if the store did not take it."""
        appended = asyncio.run_coroutine_threadsafe(self._append(session_id, entry), self._loop)
        try:
            appended.result(self._timeout_s)
        except Exception as exc:  # whatever the store's backend raised, it did not take it
            appended.cancel()
            logger.warning(
                "the session store did not take a prompt-log entry of %s", session_id, exc_info=True
            )
            raise StoreUnavailableError(
                f"the session store did not take the prompt ({type(exc).__name__}); retry"
            ) from exc

    async def _append(self, session_id: str, entry: LogEntry) -> None:
        if entry["op"] == "reset":  # the log and the object names start over
            await self._store.clear(session_id)
        await self._store.append_log(session_id, entry)
