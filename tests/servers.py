"""Real servers for tests: a redis-server process and a local Ray cluster."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ray
import redis
from ray import serve

# Seconds Serve waits for a new HTTP proxy before it kills it (Ray's default is 5). On a 2-core
# machine busy with the tests' own replicas a proxy can take longer to come up, and a killed
# proxy fails the whole module's setup.
PROXY_READY_TIMEOUT_S = "60"


@contextlib.contextmanager
def local_ray(http_port: int | None = None, **init: Any) -> Iterator[None]:
    """A local Ray cluster (and Serve on ``http_port``) for one module, shut down however the
    module ends, also when its setup fails: a cluster left running would make every later
    module's ``ray.init`` fail."""
    os.environ.setdefault("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", PROXY_READY_TIMEOUT_S)
    ray.init(include_dashboard=False, log_to_driver=False, **init)
    try:
        if http_port is not None:
            serve.start(http_options={"host": "127.0.0.1", "port": http_port})
        yield
    finally:
        if http_port is not None:
            with contextlib.suppress(Exception):
                serve.shutdown()
        ray.shutdown()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """A redis-server on a free loopback port, data in ``directory``; AOF on request."""

    def __init__(self, directory: Path, appendonly: bool = False) -> None:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.directory = directory
        self.appendonly = appendonly
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen | None = None

    def start(self) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._process = subprocess.Popen(
            [
                "redis-server",
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "yes" if self.appendonly else "no",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url)
        for _ in range(100):
            try:
                client.ping()
                return self
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)
            self._process = None
