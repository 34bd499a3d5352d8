"""Every computed mask of a session, as COCO RLE per (frame, object): the ``MaskStore`` interface
(``base``), its backends (``sqlite``: a file in the session directory, the default;
``postgres``: one table for every session), the RLE helpers (``rle``), and ``MaskStores``,
which opens each session's store on the configured backend."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from deployments.engine.mask_store.base import MaskStore
from deployments.engine.mask_store.rle import decode_mask, encode_masks
from deployments.engine.mask_store.sqlite import FILE_NAME, SqliteMaskStore

if TYPE_CHECKING:
    from deployments.engine.mask_store.postgres import MaskDatabase
    from deployments.protocol.settings import EngineSettings

__all__ = ["MaskStore", "MaskStores", "SqliteMaskStore", "decode_mask", "encode_masks"]


class MaskStores:
    """Opens sessions' MaskStores: with ``backend`` "postgres", new sessions keep their masks in
    the database (the replica's pool, opened here); a session directory that already holds a
    ``masks.sqlite`` (made before, or with the SQLite backend) keeps reading it, and nothing is
    migrated. Scratch sessions (one image, nothing kept) always use SQLite in their directory."""

    def __init__(
        self,
        backend: Literal["sqlite", "postgres"] = "sqlite",
        database_url: str | None = None,
        pool_size: int = 4,
    ) -> None:
        self.backend = backend
        self._database: MaskDatabase | None = None
        if backend == "postgres":
            if not database_url:
                raise ValueError("the postgres mask store needs a database URL")
            from deployments.engine.mask_store.postgres import MaskDatabase

            self._database = MaskDatabase(database_url, pool_size)

    @classmethod
    def from_settings(cls, settings: EngineSettings) -> MaskStores:
        url = settings.database_url.get_secret_value() if settings.database_url else None
        return cls(settings.mask_store, url, settings.database_pool_size)

    def open(self, session_id: str, directory: Path, *, scratch: bool = False) -> MaskStore:
        """The store of session ``session_id`` whose directory is ``directory``."""
        local = directory / FILE_NAME
        if self._database is None or scratch or local.exists():
            return SqliteMaskStore(local)
        return self._database.store(session_id)

    def close(self) -> None:
        """Close the database pool (sessions' stores of it fail after this)."""
        if self._database is not None:
            self._database.close()
