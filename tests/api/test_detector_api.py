"""``DetectorApi`` is the one statement of what the SAM 2 replicas and the ingress call on the
concept detector: its deployment implements every method with the same signature, and a
detector replica that dies under a call is ``DetectorLostError`` (503), never a lost session."""

from __future__ import annotations

import inspect
import typing
from typing import Any

import pytest
from ray.exceptions import ActorDiedError

from deployments.concept_detector import DetectorReplica
from deployments.protocol import DETECTOR_METHODS, DetectorApi, DetectorLostError
from deployments.protocol.concepts import ConceptQuery
from ingress.replica_calls import detector_api


@pytest.mark.parametrize("name", sorted(DETECTOR_METHODS))
def test_the_deployment_implements_every_method_with_its_signature(name):
    declared, implemented = getattr(DetectorApi, name), getattr(DetectorReplica, name)
    expected, actual = inspect.signature(declared), inspect.signature(implemented)
    assert [(p.name, p.kind, p.default) for p in actual.parameters.values()] == [
        (p.name, p.kind, p.default) for p in expected.parameters.values()
    ]
    assert typing.get_type_hints(implemented) == typing.get_type_hints(declared)
    assert inspect.iscoroutinefunction(implemented)


class _Dying:
    """A Serve handle whose replica dies under every call."""

    def options(self, *, method_name: str) -> _Dying:
        self.method = method_name
        return self

    def remote(self, **kwargs: Any) -> _Dying:
        self.kwargs = kwargs
        return self

    def __await__(self):
        return self._fail().__await__()

    async def _fail(self) -> None:
        raise ActorDiedError()

    def cancel(self) -> None:
        pass


async def test_a_detector_replica_that_dies_is_a_detector_lost_error():
    handle = _Dying()
    detector = detector_api(handle, timeout_s=5)  # type: ignore[arg-type]
    query = ConceptQuery(text="grasper")
    with pytest.raises(DetectorLostError):
        await detector.detect_image(image=b"png", query=query, normalized=False)
    assert handle.method == "detect_image" and handle.kwargs["query"] == query
