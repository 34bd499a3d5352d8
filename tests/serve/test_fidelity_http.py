"""Stock SAM 2's masks over HTTP: an annotator's sequence sent to the real stack (Ray Serve,
the ingress, a replica, Redis), every mask compared bit for bit with stock
``SAM2VideoPredictor`` on the same weights and frames, the replica pinned as the differential
suite pins the engine (float32, one torch thread, no encoder batching)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from deployments.engine import SessionEngine
from deployments.engine.mask_store import decode_mask
from deployments.protocol import RLE, Prompt, PropagationRequest
from tests.conftest import engine_settings
from tests.fidelity.oracle import StockOracle, build_stock, session_frames
from tests.serve.conftest import deploy, stack_settings

PINNED = dict(torch_threads=1, max_encoder_batch=1, compute_dtype="float32")


@pytest.fixture(scope="module")
def stack(http_port, redis_server, tmp_path_factory):
    settings = stack_settings(
        tmp_path_factory.mktemp("sessions"),
        redis_url=redis_server.url,
        min_replicas=1,
        max_replicas=1,
        **PINNED,
    )
    return deploy(http_port, "fidelity", settings)


@pytest.fixture
def oracle(predictor, video, tmp_path) -> Iterator[StockOracle]:
    """Stock SAM 2 with the replica's weights (the same seed) over the frames the engine
    decodes from the same file."""
    engine = SessionEngine(engine_settings(tmp_path, **PINNED), predictor=predictor)
    try:
        session = engine.session(engine.create_session(video).session_id)
        frames = session_frames(session)
        height, width = session.video.height, session.video.width
    finally:
        engine.close()
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield StockOracle(build_stock(predictor), frames, height, width)
    finally:
        torch.set_num_threads(previous)


def masks_of(body: dict) -> dict[int, np.ndarray]:
    return {m["obj_id"]: decode_mask(RLE.model_validate(m["rle"])) for m in body["masks"]}


def assert_same(served: np.ndarray, stock: np.ndarray, what: str) -> int:
    """Equal bit for bit; returns the mask's area."""
    assert np.array_equal(served, stock), f"{what}: {int((served != stock).sum())} pixels differ"
    return int(stock.sum())


def test_an_annotators_sequence_over_http_gives_stock_sam2s_masks(stack, video, oracle):
    created = stack.upload(video)
    assert created.status_code == 201, created.text
    base = f"/api/v1/sessions/{created.json()['session_id']}"
    try:
        run_sequence(stack, base, oracle)
    finally:
        stack.client.delete(base)


def run_sequence(stack, base: str, oracle: StockOracle) -> None:
    area = 0
    steps = [
        Prompt(frame_index=0, obj_id=1, points=[(40, 60)]),
        PropagationRequest(direction="forward"),
        Prompt(frame_index=8, obj_id=1, points=[(120, 90)], labels=[0]),  # a correction
        Prompt(frame_index=5, obj_id=2, box=(100, 10, 150, 50)),  # a new object, tracked frame
        PropagationRequest(direction="both", start_frame_index=8, max_frames=5),
    ]
    for n, step in enumerate(steps):
        if isinstance(step, Prompt):
            answer = stack.client.post(f"{base}/prompts", json=step.model_dump(exclude_none=True))
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert body["exact"] is True
            stock = oracle.prompt(step, step.obj_id)
            area += assert_same(masks_of(body)[step.obj_id], stock[step.obj_id], f"step {n}")
        else:
            frames, done = stream(stack, base, step)
            assert done["exact"] is True and done["approximate_frames"] == []
            expected = oracle.propagate(step)
            assert [f for f, _ in expected] == [f["frame_index"] for f in frames], f"step {n}"
            for (frame, stock), served in zip(expected, frames, strict=True):
                got = masks_of(served)
                for obj_id, mask in stock.items():
                    what = f"step {n}, frame {frame}, object {obj_id}"
                    area += assert_same(got[obj_id], mask, what)
    cleared = stack.client.delete(f"{base}/frames/8/prompts", params={"obj_id": 1})
    assert cleared.status_code == 200, cleared.text
    stock = oracle.clear(8, 1)
    assert cleared.json()["exact"] is True
    assert_same(masks_of(cleared.json()).get(1, np.zeros_like(stock[1])), stock[1], "clear")
    assert area > 0, "every compared mask was empty: the comparison showed nothing"


def stream(stack, base: str, request: PropagationRequest) -> tuple[list[dict], dict]:
    with stack.client.stream(
        "POST",
        f"{base}/propagate",
        json=request.model_dump(exclude_none=True),
        headers={"Accept": "application/x-ndjson"},
    ) as response:
        assert response.status_code == 200
        events = [json.loads(line) for line in response.iter_lines() if line]
    assert events[-1]["type"] == "done", events[-1]
    return [e for e in events if e["type"] == "frame"], events[-1]
