"""The ``sam2serve`` command line against the real local service: ``track`` writes the ZIP that
``POST /track`` answers (same names, sizes, pixels and PNG bytes) with progress bars on the way;
the session commands, export and health; the exit codes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from sam2serve.cli import (
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_UNAUTHORIZED,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    main,
)
from tests.client.conftest import NUM_FRAMES, SIZE, TEXT
from tests.servers import free_port
from tests.videos import circle_at


def png_images(path: Path) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(path) as archive:
        return {
            name: cv2.imdecode(np.frombuffer(archive.read(name), np.uint8), cv2.IMREAD_UNCHANGED)
            for name in archive.namelist()
        }


def test_track_command_writes_the_zip_post_track_answers(service, client, video, tmp_path):
    x, y = (round(v) for v in circle_at(3, NUM_FRAMES, SIZE))
    reference = client.track(
        video, tmp_path / "track.zip", frame_idx=3, points=[(x, y), (x + 2, y)]
    )
    output = tmp_path / "cli.zip"
    env = {k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"}
    env |= {"SAM2SERVE_URL": service.url, "SAM2SERVE_API_KEY": service.api_key}
    command = [str(Path(sys.executable).with_name("sam2serve")), "track", str(video)]
    command += ["--frame", "3", "--point", f"{x},{y}", "--point", f"{x + 2},{y}"]
    command += ["--label", "1,1", "-o", str(output)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == EXIT_OK, result.stderr
    assert result.stdout.strip() == str(output)

    with zipfile.ZipFile(reference) as server, zipfile.ZipFile(output) as written_here:
        # the same PNG bytes as the server's (the ZIPs differ only in their entries' times)
        assert {n: server.read(n) for n in server.namelist()} == {
            n: written_here.read(n) for n in written_here.namelist()
        }
    expected, written = png_images(reference), png_images(output)
    assert list(written) == list(expected) == [f"{i:05d}.png" for i in range(NUM_FRAMES)]
    for name, image in written.items():
        assert image.dtype == np.uint8 and image.shape == (SIZE[1], SIZE[0])
        assert np.array_equal(image, expected[name]), name
    assert set(np.unique(np.stack(list(written.values())))) <= {0, 255}

    bars = result.stderr
    assert re.search(r"uploading: .*\d+(\.\d+)?[kMG]?B/s", bars), bars
    frames_rate = rf"{NUM_FRAMES}/{NUM_FRAMES} \[[\d:]+<[\d:]+, +[\d.]+(frames/s|s/frames)\]"
    assert re.search(rf"propagating: 100%.*{frames_rate}", bars), bars
    assert re.search(rf"writing masks: 100%.*{frames_rate}", bars), bars
    assert client.list_sessions() == []  # the CLI's session, and /track's, are gone


def test_track_with_a_text_tracks_every_instance(service, client, video, tmp_path, capsys):
    connection = ["--url", service.url, "--api-key", service.api_key, "-q"]
    output = tmp_path / "text.zip"
    command = ["track", str(video), "--frame", "1", "--text", TEXT, "-o", str(output)]
    assert main([*connection, *command]) == EXIT_OK, capsys.readouterr().err
    written = png_images(output)
    assert list(written) == [f"{i:05d}.png" for i in range(NUM_FRAMES)]
    assert written["00001.png"].any()  # the instances' masks on the prompted frame
    assert client.list_sessions() == []


def test_session_commands_export_health_and_exit_codes(service, client, video, tmp_path, capsys):
    connection = ["--url", service.url, "--api-key", service.api_key]
    sid = client.create_session(video).session_id
    assert main([*connection, "sessions", "ls"]) == EXIT_OK
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["SESSION", "STATUS", "FRAMES", "SIZE", "OBJECTS", "EXPIRES"]
    assert table[1].split()[:5] == [sid, "ready", str(NUM_FRAMES), "160x120", "0"]
    assert main(["sessions", "show", sid, *connection]) == EXIT_OK  # options after the command
    assert json.loads(capsys.readouterr().out)["session_id"] == sid

    target = tmp_path / "coco.json"
    assert main([*connection, "export", sid, "--format", "coco", "-o", str(target)]) == EXIT_OK
    printed = capsys.readouterr()
    assert printed.out.strip() == str(target) and "downloading coco: 100%" in printed.err
    assert len(json.loads(target.read_text())["images"]) == NUM_FRAMES

    assert main([*connection, "sessions", "rm", sid]) == EXIT_OK
    assert main([*connection, "sessions", "show", sid]) == EXIT_NOT_FOUND
    assert f"session {sid} not found (404 not_found)" in capsys.readouterr().err
    assert main([*connection, "health"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["ready"] is True

    wrong_key = ["--url", service.url, "--api-key", "not-a-key"]
    assert main([*wrong_key, "sessions", "ls"]) == EXIT_UNAUTHORIZED
    assert main(["--url", f"http://127.0.0.1:{free_port()}", "health"]) == EXIT_UNAVAILABLE
    assert "cannot reach" in capsys.readouterr().err


@pytest.mark.parametrize(
    "arguments",
    [
        ["--point", "1;2"],  # not x,y
        ["--point", "1,2", "--label", "1,0"],  # two labels for one point
        [],  # no prompt at all
        ["--text", "grasper", "--point", "1,2"],  # a text is a prompt of its own
    ],
)
def test_bad_track_arguments_are_usage_errors(video, tmp_path, arguments, capsys):
    command = ["track", str(video), "--frame", "0", "-o", str(tmp_path / "x.zip"), *arguments]
    with pytest.raises(SystemExit) as usage:
        main(command)
    assert usage.value.code == EXIT_USAGE
    assert "error:" in capsys.readouterr().err
