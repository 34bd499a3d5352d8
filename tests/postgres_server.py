"""A real PostgreSQL server for tests and benchmarks: Debian's ``postgresql`` package's
``initdb`` and ``pg_ctl`` on a temporary data directory and a free loopback port. PostgreSQL
refuses to run as root, and CI runs as root: there the server runs as the ``postgres`` user
(``runuser``), which the package creates. No mocks: the tests talk to the real server.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


def postgres_bin() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` with initdb and pg_ctl, else the
    directory of an ``initdb`` on PATH; None when PostgreSQL is not installed."""
    found = sorted(
        (Path(d) for d in glob.glob("/usr/lib/postgresql/*/bin") if Path(d, "initdb").exists()),
        key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0,
    )
    if found:
        return found[-1]
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class PostgresServer:
    """One PostgreSQL cluster in a fresh temporary directory, listening on 127.0.0.1 only (no
    Unix socket), trust authentication, database ``postgres``.

    ``durable=False`` (tests) turns fsync and synchronous commits off: the tests check what the
    server answers, not what survives a power cut. Benchmarks keep PostgreSQL's defaults.
    """

    def __init__(self, *, durable: bool = False) -> None:
        binaries = postgres_bin()
        if binaries is None:
            raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
        self.bin = binaries
        self.durable = durable
        self.port = _free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        # Not under pytest's tmp_path: that is private to root, and the server may run as the
        # postgres user.
        self.directory = Path(tempfile.mkdtemp(prefix="sam2-serve-pg-"))
        self.data = self.directory / "data"
        self._as_postgres = os.geteuid() == 0

    def start(self) -> PostgresServer:
        """Create the cluster (first start only) and start the server; back when it accepts
        connections."""
        if self._as_postgres:
            shutil.chown(self.directory, "postgres", "postgres")
        if not self.data.exists():
            self._run(
                "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                "--no-sync", "--no-instructions",
            )  # fmt: skip
        options = [
            "-c listen_addresses=127.0.0.1",
            f"-c port={self.port}",
            "-c unix_socket_directories=''",
            "-c max_connections=50",
        ]
        if not self.durable:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        log = self.directory / "server.log"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(log), "-w", "-t", "60",
                  "-o", " ".join(options), "start")  # fmt: skip
        return self

    @staticmethod
    def version() -> str:
        """ "PostgreSQL <version>" of the binaries the server runs."""
        binaries = postgres_bin()
        if binaries is None:
            return "PostgreSQL (not installed)"
        done = subprocess.run([str(binaries / "postgres"), "--version"], capture_output=True)
        return "PostgreSQL " + done.stdout.decode().split()[2]

    def stop(self) -> None:
        """Stop the server (fast shutdown: open connections are dropped) and keep its data."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def close(self) -> None:
        """Stop the server if it runs and remove its directory."""
        try:
            if (self.data / "postmaster.pid").exists():
                self.stop()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bin / program), *args]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, cwd=self.directory)
        if done.returncode != 0:
            log = self.directory / "server.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{program} failed: {done.stderr or done.stdout}\n{tail}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
