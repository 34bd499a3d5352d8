"""The annotation page (``GET /``) in real headless Chromium, driven by Selenium, against the
real local stack: upload, click, name, propagate over the WebSocket, seek, see the masks drawn,
jump from the timeline, export; with API keys, the key asked once and sent on every call.

Screenshots are kept in ``tests/artifacts/web/`` (gitignored; CI keeps the folder as an
artefact); ``annotate.png`` there is the README's picture (``docs/images/annotate.png``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
from pycocotools import mask as mask_utils
from selenium import webdriver
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from deployments.engine.exports import PALETTE
from deployments.protocol import ServiceSettings
from ingress.web import STATIC_DIR
from tests.serve.concepts import concept, detector_settings
from tests.serve.conftest import Stack, deploy, stack_settings
from tests.videos import circle_at, write_video
from tests.web.conftest import ARTIFACTS, CHROMEDRIVER, CHROMIUM

NUM_FRAMES = 12
SIZE = (160, 120)
KEY = "web-key-0123456789"
WAIT_S = 180  # an upper bound for explicit waits on a busy 2-core machine, never a measurement
# The server's overlay alpha (the overlay_alpha setting, served to the page), as the page's
# canvas holds it (a byte).
MASK_ALPHA = round(ServiceSettings().overlay_alpha * 255) / 255

pytestmark = pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium "
    "chromium-driver; scripts/test.sh installs them)",
)


@pytest.fixture(scope="module")
def stack(http_port, tmp_path_factory, clip) -> Stack:
    """With a concept detector that keeps two instances of "grasper" on the clip's frame 0."""
    grasper = concept(clip, 0, "grasper", count=2)
    settings = stack_settings(
        tmp_path_factory.mktemp("sessions"),
        min_replicas=1,
        max_replicas=1,
        max_sessions=3,
        detector=detector_settings(grasper.threshold),
        detector_num_cpus=0,
    )
    return deploy(http_port, "web", settings)


@pytest.fixture(scope="module")
def keyed_stack(http_port, tmp_path_factory) -> Stack:
    settings = stack_settings(
        tmp_path_factory.mktemp("keyed"),
        api_keys=[KEY],
        min_replicas=1,
        max_replicas=1,
        max_sessions=2,
    )
    return deploy(http_port, "webkeys", settings)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("clip") / "clip.mp4", NUM_FRAMES, SIZE)


def wait(driver: webdriver.Chrome, condition, message: str) -> Any:
    return WebDriverWait(driver, WAIT_S).until(lambda d: condition(d), message)


def page_url(stack: Stack) -> str:
    return str(stack.client.base_url).rstrip("/") + "/"


def open_page(driver: webdriver.Chrome, url: str) -> None:
    driver.get(url)
    wait(driver, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready"), "JS")


def wait_for_frame(driver: webdriver.Chrome, frame: int) -> WebElement:
    """The stage once it has drawn ``frame`` with its masks."""
    stage = driver.find_element(By.ID, "stage")
    wait(
        driver,
        lambda _: (
            stage.get_attribute("data-frame") == str(frame)
            and stage.get_attribute("data-loading") == "false"
        ),
        f"frame {frame} drawn",
    )
    return stage


def click_at(driver: webdriver.Chrome, canvas: WebElement, xy: tuple[float, float]) -> None:
    """Click the canvas at a frame-space point (Selenium offsets are from the element's centre)."""
    width, height = canvas.size["width"], canvas.size["height"]
    dx = xy[0] * width / SIZE[0] - width / 2
    dy = xy[1] * height / SIZE[1] - height / 2
    ActionChains(driver).move_to_element_with_offset(canvas, round(dx), round(dy)).click().perform()


def drag_box(
    driver: webdriver.Chrome, canvas: WebElement, start: tuple[int, int], end: tuple[int, int]
) -> None:
    """Press at ``start``, move to ``end`` and release (frame-space points)."""
    scale = canvas.size["width"] / SIZE[0]
    dx, dy = (end[0] - start[0]) * scale, (end[1] - start[1]) * scale
    width, height = canvas.size["width"], canvas.size["height"]
    chain = ActionChains(driver).move_to_element_with_offset(
        canvas, round(start[0] * scale - width / 2), round(start[1] * scale - height / 2)
    )
    chain.click_and_hold().move_by_offset(round(dx / 2), round(dy / 2))
    chain.move_by_offset(round(dx / 2), round(dy / 2)).release().perform()


def press(driver: webdriver.Chrome, *keys: str) -> None:
    """Keys to the page (not to an input), as a person presses them."""
    driver.find_element(By.TAG_NAME, "h1").click()
    ActionChains(driver).send_keys(*keys).perform()


def rgb(png: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1].astype(float)


def decode(rle: dict) -> np.ndarray:
    return mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)


def run_js_module(driver: webdriver.Chrome, module: str, body: str, *args: Any) -> Any:
    """Import one of the page's modules in the page and run ``body`` with it as ``m``."""
    script = f"""
        const done = arguments[arguments.length - 1];
        import("./static/{module}").then((m) => {{ {body} }}).catch((e) => done(String(e)));
    """
    return driver.execute_async_script(script, *args)


def runs(mask: np.ndarray) -> list[int]:
    """A mask's uncompressed COCO counts: runs of 0s and 1s in column-major order."""
    flat = mask.flatten(order="F").astype(np.int8)
    edges = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], edges, [flat.size]])
    lengths = np.diff(bounds).tolist()
    return lengths if flat[0] == 0 else [0, *lengths]


def test_the_page_and_its_files_are_open_and_the_prefix_redirects(keyed_stack):
    """With API keys on, the page and its static files need no key; the API does."""
    client = keyed_stack.client
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'src="static/app.js"' in page.text
    assert f'<meta name="overlay-alpha" content="{ServiceSettings().overlay_alpha:g}"' in page.text
    for name in sorted(path.name for path in STATIC_DIR.iterdir()):
        assert client.get(f"/static/{name}").status_code == 200, name
    assert client.get("/api/v1/sessions").status_code == 401
    bare = httpx.get(str(client.base_url).rstrip("/"), follow_redirects=False)
    assert bare.status_code == 307 and bare.headers["location"].endswith("/webkeys/")


def test_the_rle_decoder_matches_pycocotools(stack, browser):
    """Masks with long runs (multi-character counts, negative differences), one-pixel runs and
    a mask that starts with a set pixel decode as pycocotools decodes them."""
    rng = np.random.default_rng(0)
    big = np.zeros((600, 800), bool)
    big[100:500, 50:700] = True
    big[300:320, 200:205] = False
    noise = rng.random((37, 53)) < 0.5
    corner = np.zeros((5, 7), bool)
    corner[0, 0] = corner[4, 6] = True
    masks = [big, noise, corner, np.zeros((3, 4), bool), np.ones((3, 4), bool)]
    rles = [mask_utils.encode(np.asfortranarray(m.astype(np.uint8))) for m in masks]
    payload = [{"size": r["size"], "counts": r["counts"].decode()} for r in rles]
    open_page(browser, page_url(stack))
    decoded = run_js_module(
        browser,
        "rle.js",
        "done(arguments[0].map((r) => ({counts: m.decodeCounts(r.counts),"
        " pixels: Array.from(m.decodeMask(r)).join('')})));",
        payload,
    )
    assert not isinstance(decoded, str), decoded
    for mask, result in zip(masks, decoded, strict=True):
        assert result["counts"] == runs(mask)
        pixels = np.frombuffer(result["pixels"].encode(), np.uint8) - ord("0")
        assert (pixels.reshape(mask.shape).astype(bool) == mask).all()


def test_the_page_colours_are_the_servers_palette(stack, browser):
    open_page(browser, page_url(stack))
    colours = run_js_module(
        browser, "palette.js", "done(Array.from({length: 256}, (_, i) => m.colour(i)));"
    )
    assert colours == PALETTE.tolist()


def test_annotate_propagate_seek_review_and_export(stack, browser, clip, downloads):
    """A person's session from upload to COCO export, checked in the page's pixels and in
    what the server stored."""
    open_page(browser, page_url(stack))
    browser.find_element(By.ID, "upload-file").send_keys(str(clip))
    browser.find_element(By.ID, "upload-end").send_keys("1.0")
    browser.find_element(By.ID, "upload-max-side").send_keys("160")
    browser.find_element(By.ID, "upload-button").click()
    wait_for_frame(browser, 0)
    sid = browser.execute_script("return location.hash").removeprefix("#session=")
    base = f"/api/v1/sessions/{sid}"
    video = stack.client.get(base).json()["video"]
    assert video["end_time"] == pytest.approx(1.0) and video["num_frames"] == 10
    count = video["num_frames"]

    canvas = browser.find_element(By.ID, "mask-canvas")
    click_at(browser, canvas, circle_at(0, NUM_FRAMES, SIZE))
    row = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, '.object[data-obj="1"]'), "obj")
    row[0].find_element(By.CSS_SELECTOR, "input.name").send_keys("ball", Keys.TAB)
    row[0].find_element(By.CSS_SELECTOR, "input.category").send_keys("toy", Keys.TAB)
    wait(
        browser,
        lambda _: stack.client.get(f"{base}/objects").json()["objects"][0]["category"] == "toy",
        "name and category saved",
    )
    objects = stack.client.get(f"{base}/objects").json()["objects"]
    assert [(o["obj_id"], o["name"], o["prompt_frames"]) for o in objects] == [(1, "ball", [0])]

    browser.find_element(By.CSS_SELECTOR, '[data-direction="forward"]').click()
    panel = browser.find_element(By.ID, "propagate-panel")
    wait(browser, lambda _: panel.get_attribute("data-state") != "running", "propagation ends")
    assert panel.get_attribute("data-state") == "done", panel.text
    assert browser.find_element(By.ID, "propagate-progress").get_attribute("value") == "1"

    stored = {
        f["frame_index"]: f["masks"][0]
        for f in stack.client.get(f"{base}/masks", params={"obj_id": 1}).json()["frames"]
    }
    assert sorted(stored) == list(range(count))
    later = max(k for k, m in stored.items() if m["area"] >= 20)  # a frame with a mask to see
    assert later > 0, "the propagation drew no mask past the first frame"
    press(browser, *(["."] * later))
    stage = wait_for_frame(browser, later)
    assert stage.get_attribute("data-masks") == "1"
    shown = rgb(stage.screenshot_as_png)
    browser.save_screenshot(str(ARTIFACTS / "annotate.png"))
    press(browser, "m")
    wait(browser, lambda d: not d.find_element(By.ID, "show-masks").is_selected(), "masks off")
    hidden = rgb(stage.screenshot_as_png)
    press(browser, "m")
    cv2.imwrite(str(ARTIFACTS / "stage_masks_shown.png"), shown[:, :, ::-1])
    cv2.imwrite(str(ARTIFACTS / "stage_masks_hidden.png"), hidden[:, :, ::-1])
    assert_overlay_drawn(shown, hidden, decode(stored[later]["rle"]), PALETTE[1])

    assert_timeline_jumps(browser, stack, base, count)
    browser.find_element(By.CSS_SELECTOR, '[data-format="coco"]').click()
    coco = json.loads(downloaded(browser, downloads, f"{sid}_coco.json").read_text())
    assert [c["name"] for c in coco["categories"]] == ["toy"]
    assert len(coco["images"]) == count
    exported = {a["image_id"] - 1: decode(a["segmentation"]) for a in coco["annotations"]}
    assert (exported[later] == decode(stored[later]["rle"])).all()
    assert "error" not in browser.find_element(By.ID, "status").get_attribute("class")
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []


def test_the_text_box_makes_every_instance_a_named_object(stack, browser, clip):
    open_page(browser, page_url(stack))
    browser.find_element(By.ID, "upload-file").send_keys(str(clip))
    browser.find_element(By.ID, "upload-button").click()
    stage = wait_for_frame(browser, 0)
    sid = browser.execute_script("return location.hash").removeprefix("#session=")
    browser.find_element(By.ID, "text-input").send_keys("grasper", Keys.ENTER)
    rows = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".object"), "new objects")
    names = [r.find_element(By.CSS_SELECTOR, "input.name").get_attribute("value") for r in rows]
    assert names == ["grasper 1", "grasper 2"]
    status = browser.find_element(By.ID, "status")
    assert status.text.startswith("2 new object(s): #1 grasper 1, #2 grasper 2"), status.text
    wait(browser, lambda _: stage.get_attribute("data-masks") == "2", "their masks drawn")
    objects = stack.client.get(f"/api/v1/sessions/{sid}/objects").json()["objects"]
    named = [(o["name"], o["category"]) for o in objects]
    assert named == [("grasper 1", "grasper"), ("grasper 2", "grasper")]
    stack.client.delete(f"/api/v1/sessions/{sid}")


def assert_overlay_drawn(
    shown: np.ndarray, hidden: np.ndarray, mask: np.ndarray, colour: np.ndarray
) -> None:
    """Inside the mask (away from its outline) the page shows the frame blended with the
    object's colour at the server's alpha; outside it, the frame unchanged."""
    height, width = shown.shape[:2]
    scaled = cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST)
    margin = np.ones((2 * (width // SIZE[0]) + 3,) * 2, np.uint8)
    inside = cv2.erode(scaled, margin).astype(bool)
    outside = ~cv2.dilate(scaled, margin).astype(bool)
    assert inside.sum() > 50, "the mask is too small to see"
    expected = hidden * (1 - MASK_ALPHA) + colour.astype(float) * MASK_ALPHA
    assert np.abs(shown[inside] - expected[inside]).mean() < 6
    assert np.abs(shown[outside] - hidden[outside]).mean() < 1


def assert_timeline_jumps(browser: webdriver.Chrome, stack: Stack, base: str, count: int) -> None:
    """The timeline has the object's row; a review item and a click on the bar seek there."""
    timeline = stack.client.get(f"{base}/objects/1/timeline").json()
    canvas = browser.find_element(By.ID, "timeline")
    assert canvas.get_attribute("data-rows") == "1"
    items = browser.find_elements(By.CSS_SELECTOR, ".review-item")
    assert [int(i.get_attribute("data-frame")) for i in items] == [
        r["frame_index"] for r in timeline["review"]
    ]
    if items:
        target = int(items[-1].get_attribute("data-frame"))
        items[-1].click()
        wait_for_frame(browser, target)
    # Click the middle of frame 2's slice of the bar, away from review marks' rows' tops.
    width = canvas.size["width"]
    dx = (2.5 / count) * width - width / 2
    ActionChains(browser).move_to_element_with_offset(canvas, round(dx), 4).click().perform()
    stage = browser.find_element(By.ID, "stage")
    landing = {"2", *(str(r["frame_index"]) for r in timeline["review"])}
    wait(browser, lambda _: stage.get_attribute("data-frame") in landing, "a jump to frame 2")


def downloaded(browser: webdriver.Chrome, folder: Path, name: str) -> Path:
    """The file once Chromium has finished writing it."""
    path = folder / name
    wait(browser, lambda _: path.exists() and not (folder / f"{name}.crdownload").exists(), name)
    return path


def test_with_api_keys_the_page_asks_once_and_sends_the_key(keyed_stack, browser, clip):
    """The page asks for the key when the API answers 401, keeps it for the tab, and sends it on
    every call: the session list, frames, masks, a click, a box for a new object, and
    propagation (NDJSON, since a browser cannot put a key on a WebSocket)."""
    auth = {"Authorization": f"Bearer {KEY}"}
    with clip.open("rb") as data:
        created = keyed_stack.client.post(
            "/api/v1/sessions", files={"file": ("clip.mp4", data)}, headers=auth
        )
    sid = created.json()["session_id"]
    browser.get("about:blank")  # a fresh tab state for this origin's page
    open_page(browser, page_url(keyed_stack))
    dialog = browser.find_element(By.ID, "key-dialog")
    wait(browser, lambda _: dialog.is_displayed(), "the key is asked for")
    browser.find_element(By.ID, "key-input").send_keys(KEY, Keys.ENTER)
    opener = wait(
        browser,
        lambda d: d.find_elements(By.CSS_SELECTOR, f'[data-session="{sid}"]'),
        "the session list",
    )
    opener[0].click()
    wait_for_frame(browser, 0)
    canvas = browser.find_element(By.ID, "mask-canvas")
    click_at(browser, canvas, circle_at(0, NUM_FRAMES, SIZE))
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, '.object[data-obj="1"]'), "object")
    browser.find_element(By.ID, "new-object").click()
    drag_box(browser, canvas, (105, 8), (145, 42))  # around the square
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, '.object[data-obj="2"]'), "a box")
    browser.find_element(By.CSS_SELECTOR, '[data-direction="forward"]').click()
    panel = browser.find_element(By.ID, "propagate-panel")
    wait(browser, lambda _: panel.get_attribute("data-state") != "running", "propagation ends")
    assert panel.get_attribute("data-state") == "done", panel.text
    masks = keyed_stack.client.get(f"/api/v1/sessions/{sid}/masks", headers=auth).json()
    assert len(masks["frames"]) == NUM_FRAMES
    assert all([m["obj_id"] for m in f["masks"]] == [1, 2] for f in masks["frames"])
    browser.refresh()  # the key is kept for the tab: no second question
    wait_for_frame(browser, 0)
    assert not browser.find_element(By.ID, "key-dialog").is_displayed()
    browser.save_screenshot(str(ARTIFACTS / "annotate_with_key.png"))
    browser.execute_script("sessionStorage.clear()")  # other tests' pages start without a key
