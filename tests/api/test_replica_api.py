"""``ReplicaApi`` is the one statement of what the ingress calls on a replica: the replica
implements every method of it with the same signature, and the ingress addresses replica
methods only through it."""

from __future__ import annotations

import ast
import asyncio
import inspect
import typing
from pathlib import Path
from typing import Any

import pytest

from deployments.protocol import (
    METHODS,
    PLACEMENT_METHODS,
    STREAMING_METHODS,
    DeadlineExceededError,
    Prompt,
    ReplicaApi,
)
from deployments.replica import SAM2Replica
from ingress.replica_calls import replica_api

INGRESS = Path(__file__).resolve().parents[2] / "ingress"


@pytest.mark.parametrize("name", sorted(METHODS))
def test_the_replica_implements_every_method_with_its_signature(name):
    declared, implemented = getattr(ReplicaApi, name), getattr(SAM2Replica, name)
    expected, actual = inspect.signature(declared), inspect.signature(implemented)
    assert [(p.name, p.kind, p.default) for p in actual.parameters.values()] == [
        (p.name, p.kind, p.default) for p in expected.parameters.values()
    ]
    assert typing.get_type_hints(implemented) == typing.get_type_hints(declared)
    if name in STREAMING_METHODS:
        assert inspect.isasyncgenfunction(implemented)
    else:
        assert inspect.iscoroutinefunction(declared)
        assert inspect.iscoroutinefunction(implemented)


def test_the_routers_method_sets_name_methods_of_the_interface():
    assert PLACEMENT_METHODS <= METHODS
    assert STREAMING_METHODS <= METHODS


def test_the_ingress_passes_no_replica_method_name_as_a_string():
    """Serve handles take a method's name; in the ingress no call is given it as a literal (the
    routes, whose tags share some of the words, never call a replica)."""
    for path in sorted(INGRESS.rglob("*.py")):
        routes = path.parent.name == "routers"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            for value in [*node.args, *(k.value for k in node.keywords)]:
                literal = isinstance(value, ast.Constant) and isinstance(value.value, str)
                if literal and (value.value in METHODS and not routes):
                    pytest.fail(f"{path}:{value.lineno} names replica method {value.value!r}")
            for keyword in node.keywords:
                if keyword.arg == "method_name":
                    assert not isinstance(keyword.value, ast.Constant), f"{path}:{node.lineno}"


class _Response:
    def __init__(self, result: Any, delay_s: float) -> None:
        self._result, self._delay_s = result, delay_s
        self.cancelled = False

    def __await__(self):
        return self._wait().__await__()

    async def _wait(self) -> Any:
        await asyncio.sleep(self._delay_s)
        return self._result

    def cancel(self) -> None:
        self.cancelled = True


class _Handle:
    """A Serve handle's calling convention: ``options(method_name=...).remote(**kwargs)``."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.responses: list[_Response] = []
        self._delay_s = delay_s
        self._method = ""

    def options(self, *, method_name: str) -> _Handle:
        self._method = method_name
        return self

    def remote(self, **kwargs: Any) -> _Response:
        self.calls.append((self._method, kwargs))
        self.responses.append(_Response(f"{self._method} done", self._delay_s))
        return self.responses[-1]


async def test_a_typed_call_is_a_serve_call_of_the_methods_name():
    handle = _Handle()
    prompt = Prompt(frame_index=0, points=[(1, 2)])
    replicas = replica_api(handle, timeout_s=5)  # type: ignore[arg-type]
    answer = await replicas.add_prompt(session_id="s" * 8, owner="r1", prompt=prompt)
    assert answer == "add_prompt done"
    assert handle.calls == [
        ("add_prompt", {"session_id": "s" * 8, "owner": "r1", "prompt": prompt})
    ]
    with pytest.raises(AttributeError):
        replicas.propagate  # noqa: B018  (streams: ingress.replica_calls.open_stream)
    with pytest.raises(AttributeError):
        replicas.not_a_replica_method  # type: ignore[attr-defined]  # noqa: B018


async def test_a_call_past_its_budget_is_cancelled_and_a_deadline_error():
    handle = _Handle(delay_s=5)
    with pytest.raises(DeadlineExceededError, match=r"status took longer than its 0\.05s budget"):
        await replica_api(handle, timeout_s=0.05).status()  # type: ignore[arg-type]
    assert handle.responses[0].cancelled
