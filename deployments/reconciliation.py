"""The sessions a replica took on for the store, reconciled with it.

A session created or rebuilt here is adopted: its edits go to its prompt log (``PromptJournal``)
and, every ``reconcile_s``, it is compared with its store record. One whose record is gone is
deleted with its files, one whose record names another owner is forgotten (files kept); one
adopted less than a period ago is left alone (its record may still be on its way). So a create
whose caller timed out, a rebuild that lost its lease, or a copy rebuilt elsewhere meanwhile
frees its slot within two periods. One-shot sessions are never adopted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor

from deployments.engine import SessionEngine
from deployments.journal import PromptJournal
from deployments.protocol import NotFoundError
from session_store import SessionStore

logger = logging.getLogger("ray.serve")


class Reconciler:
    """Adopts this replica's sessions and frees those the store gives to no one here."""

    def __init__(
        self,
        engine: SessionEngine,
        store: SessionStore,
        journal: PromptJournal,
        replica_id: str,
        period_s: float,
        settle_poll_s: float,
        pool: Executor,
        freed: Callable[[], None],
    ) -> None:
        self._engine = engine
        self._store = store
        self._journal = journal
        self._replica_id = replica_id
        self._period_s = period_s
        # How often ``settle_after_creation`` looks whether a creation it waits for has ended.
        self._settle_poll_s = settle_poll_s
        self._pool = pool
        self._freed = freed  # called after a session was freed
        # Sessions taken on for the store (created or rebuilt here) -> when (monotonic).
        self._adopted: dict[str, float] = {}

    def adopt(self, session_id: str) -> None:
        """Take a session on for the store: its edits go to its prompt log, and reconciliation
        watches it. Runs on an engine-call thread."""
        self._engine.session(session_id).persist(self._journal.writer(session_id))
        self._adopted[session_id] = time.monotonic()

    def disown(self, session_id: str) -> None:
        """Stop watching a session (it is about to be rebuilt here)."""
        self._adopted.pop(session_id, None)

    async def reconcile_forever(self) -> None:
        while True:
            await asyncio.sleep(self._period_s)
            try:
                await self.reconcile()
            except Exception:  # the store may be restarting: nothing is freed, next round
                logger.exception("reconciling sessions with the store failed")

    async def reconcile(self) -> None:
        """Free the adopted sessions the store gives to no one here; one adopted less than a
        period ago is left alone (its caller may still be writing its record)."""
        now = time.monotonic()
        for session_id, since in dict(self._adopted).items():
            if not self._holds(session_id):
                self._adopted.pop(session_id, None)
            elif now - since >= self._period_s:
                await self.settle(session_id)

    async def settle_after_creation(self, session_id: str) -> bool:
        """``settle`` once a creation of the session still running here has ended (the
        caller's budget bounds the wait)."""
        while self._opening(session_id):
            await asyncio.sleep(self._settle_poll_s)
        return await self.settle(session_id)

    async def settle(self, session_id: str) -> bool:
        """Delete the session (files too) if the store has no record of it, forget it (files
        kept) if the record names another owner; whether a copy held here was freed."""
        record = await self._store.get(session_id)
        owned_here = record is not None and record.replica == self._replica_id
        if owned_here or not self._holds(session_id):
            return False
        self._adopted.pop(session_id, None)
        free = self._engine.delete_session if record is None else self._engine.forget_session
        with contextlib.suppress(NotFoundError):  # freed meanwhile by a request
            await asyncio.get_running_loop().run_in_executor(self._pool, free, session_id)
        self._freed()
        logger.info(
            "freed session %s: %s", session_id, "no record" if record is None else "owned elsewhere"
        )
        return True

    def _holds(self, session_id: str) -> bool:
        try:
            self._engine.session(session_id)
        except NotFoundError:
            return False
        return True

    def _opening(self, session_id: str) -> bool:
        """Whether a creation of the session is under way here (a slot taken, not held yet)."""
        return session_id in self._engine.session_ids() and not self._holds(session_id)
