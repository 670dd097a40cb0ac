"""The seed explorer page in a real headless Chromium (Debian's `chromium`, driven by playwright): it draws the
images the server generates, pixel for pixel, with a label picker and the request's latency.

Run alone: `.venv/bin/python -m pytest -m browser` (needs /usr/bin/chromium: `apt-get install chromium`;
`.ci/run` installs it when missing). Skipped, with the reason, when no Chromium is found."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

CHROMIUM = os.environ.get("GANRT_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(CHROMIUM is None, reason="no chromium found (apt-get install chromium)")]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def canvas_pixels(page, index: int) -> np.ndarray:
    """The RGB pixels of the index-th image on the page, (H, W, 3) uint8."""
    data = page.evaluate("""(i) => {
        const c = document.querySelectorAll('#grid canvas')[i];
        return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data);
    }""", index)
    size = int(round((len(data) / 4) ** 0.5))
    return np.asarray(data, np.uint8).reshape(size, size, 4)[..., :3]


def test_the_page_draws_the_served_images_with_labels_and_latency(server, bundle_dir):
    sync_api = pytest.importorskip("playwright.sync_api")
    from ganrt.runtime import load

    s = server()
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page()
            page.goto(s.url + "/")
            page.wait_for_selector("#grid canvas", timeout=30_000)
            assert page.locator("#grid figure").count() == 16
            assert "images in" in page.locator("#status").inner_text()
            assert float(page.locator("#status").get_attribute("data-latency-ms")) > 0
            assert page.locator("#label option").count() == 11  # random + 10 classes
            assert page.locator("#truncation-row").is_hidden()  # DCGAN has no truncation
            # pick seed 40, class 7, 4 images
            page.fill("#seed", "40")
            page.fill("#count", "4")
            page.select_option("#label", "7")
            page.click("#generate")
            page.wait_for_function("document.querySelectorAll('#grid figure').length === 4 && "
                                   "document.querySelector('#grid figure').dataset.seed === '40'")
            shown = [canvas_pixels(page, i) for i in range(4)]
            captions = page.locator("#grid figcaption").all_inner_texts()
        finally:
            browser.close()
    assert captions[0] == "seed 40 · label 7"
    with load(bundle_dir) as gen:
        expected = gen.generate(seeds=[40, 41, 42, 43], labels=7)
    for i in range(4):
        np.testing.assert_array_equal(shown[i], np.repeat(expected[i], 3, axis=2))  # gray drawn as RGB


def test_behind_an_api_key_the_page_asks_for_it_once_and_draws(server):
    sync_api = pytest.importorskip("playwright.sync_api")
    key = "page-key-" + "x" * 16
    s = server("--api-key", key)
    asked = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page()
            page.on("dialog", lambda d: (asked.append(d.message), d.accept(key)))
            page.goto(s.url + "/")  # the page itself is public
            page.wait_for_selector("#grid canvas", timeout=30_000)
            assert page.locator("#grid figure").count() == 16
            page.click("#next")  # the key is kept for the tab: no second question
            page.wait_for_function("document.querySelector('#grid figure').dataset.seed === '16'")
        finally:
            browser.close()
    assert asked == ["This server needs an API key:"]
