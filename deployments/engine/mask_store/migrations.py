"""The PostgreSQL schema of the masks: plain SQL files in ``migrations/``, named
``<version>_<what>.sql``, applied in order of version, each once, recorded in ``schema_version``.

Every replica runs ``migrate`` when it opens its pool; a transaction-scoped advisory lock makes
the replicas that start together apply each file exactly once, and a file that fails leaves the
schema as it was (PostgreSQL's DDL is transactional).
"""

from __future__ import annotations

from pathlib import Path

import psycopg

DIRECTORY = Path(__file__).with_name("migrations")
# pg_advisory_xact_lock's key for "migrating sam2-serve's masks" (any constant of our own).
_LOCK_KEY = 0x5A3253_4D41534B
_VERSIONS = """
CREATE TABLE IF NOT EXISTS schema_version (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


def migrations() -> list[tuple[int, Path]]:
    """(version, file) of every migration, in order."""
    found = sorted((int(path.name.split("_", 1)[0]), path) for path in DIRECTORY.glob("*.sql"))
    versions = [version for version, _ in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"two migrations share a version in {DIRECTORY}")
    return found


def migrate(conn: psycopg.Connection) -> list[int]:
    """Apply the migrations this database lacks, in one transaction; the versions applied."""
    applied_now = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        conn.execute(_VERSIONS)
        applied = {version for (version,) in conn.execute("SELECT version FROM schema_version")}
        for version, path in migrations():
            if version in applied:
                continue
            conn.execute(path.read_text())  # no parameters: several statements may run
            conn.execute(
                "INSERT INTO schema_version (version, name) VALUES (%s, %s)",
                (version, path.stem),
            )
            applied_now.append(version)
    return applied_now
