"""The browser tests run against the real stack, one Ray cluster and Serve per module, like the
HTTP tests: the same fixture."""

from tests.serve.conftest import http_port  # noqa: F401  (a fixture, used by name)
