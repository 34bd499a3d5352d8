"""What the client sends, without a server: where the server has a default (review thresholds,
page sizes, the propagation's direction) the client leaves the value out; and the client
package imports nothing of the server."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys

import httpx

from sam2serve import AsyncClient, Client, calls


def built(call: calls.Call) -> httpx.Request:
    with httpx.Client(base_url="http://server") as http:
        return call.request(http, httpx.Timeout(5))


def test_where_the_server_has_a_default_the_client_sends_nothing():
    assert built(calls.review("s", None, None)).url.query == b""
    assert built(calls.object_timeline("s", 1, None, None)).url.query == b""
    assert built(calls.masks_page("s", None, None, None, None)).url.query == b""
    request = calls.propagation_request(None, None, None, None)
    assert json.loads(built(calls.propagate("s", request, stream=False)).content) == {}
    given = built(calls.review("s", 0.25, 0.75)).url.params
    assert (given["score_threshold"], given["iou_threshold"]) == ("0.25", "0.75")
    for client in (Client, AsyncClient):
        for method, names in [
            (client.review, ["score_threshold", "iou_threshold"]),
            (client.object_timeline, ["score_threshold", "iou_threshold"]),
            (client.propagate, ["direction", "max_frames"]),
            (client.propagate_stream, ["direction", "max_frames"]),
            (client.masks, ["limit"]),
            (client.iter_masks, ["page_size"]),
        ]:
            parameters = inspect.signature(method).parameters
            assert all(parameters[name].default is None for name in names), method


def test_the_client_imports_nothing_of_the_server():
    server = ["deployments", "ingress", "session_store", "torch", "ray", "cv2", "av", "sam2"]
    code = (
        "import sys, sam2serve, sam2serve.cli, sam2serve.track_zip; "
        f"print([m for m in sys.modules if m.split('.')[0] in {server!r}])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
