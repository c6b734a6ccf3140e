"""The web page at `/` in headless Debian chromium (Playwright pointed at it) on the session Serve app:
a question asked, the answer streamed in, sources and version shown, a rating stored against the trace.
The screenshot is kept in tests/output/serving_page/."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import pytest

from tests.serving.conftest import ServeApp
from tests.serving.test_api import ANSWERABLE

OUTPUT = Path(__file__).resolve().parents[1] / "output" / "serving_page"

# Every text the answer element shows while the page streams, in order (the test reads them back).
RECORD_ANSWER = """
localStorage.setItem("twin-api-key", %s);
window.answerTexts = [];
new MutationObserver(() => {
  const answer = document.getElementById("answer");
  if (answer) window.answerTexts.push([document.body.dataset.state || "", answer.textContent]);
}).observe(document, {subtree: true, childList: true, characterData: true});
"""


def test_the_page_streams_an_answer_with_sources_and_stores_a_rating(serve_app: ServeApp) -> None:
    from playwright.sync_api import sync_playwright

    from twin.canary.store import CanaryStore
    from twin.storage.documents import DocumentStore

    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("Debian's chromium is needed: run scripts/install_chromium.sh")
    OUTPUT.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.add_init_script(RECORD_ANSWER % json.dumps(serve_app.api_key))
            page.goto(serve_app.url + "/", wait_until="networkidle")
            page.wait_for_selector("#author option[value=mara-lindqvist]", state="attached")
            page.select_option("#author", "mara-lindqvist")
            page.fill("#question", ANSWERABLE[0])
            assert page.is_checked("#stream")
            page.click("#ask")
            page.wait_for_function("document.body.dataset.state === 'answered'", timeout=120_000)

            answer = page.inner_text("#answer")
            streamed = [text for state, text in page.evaluate("window.answerTexts") if state == "asking" and text]
            assert len(set(streamed)) > 2, streamed  # partial answers grew token by token before the final one
            tokens = streamed[:-1]  # the last one may be the final answer, which replaces the streamed text
            assert all(b.startswith(a) for a, b in itertools.pairwise(tokens)), streamed
            assert answer and answer != "I don't know"
            assert page.inner_text("#version") == "base"
            trace_id = page.inner_text("#trace")
            links = page.eval_on_selector_all("#sources a", "links => links.map(a => a.href)")
            assert links and links[0].endswith(ANSWERABLE[1]), links
            page.screenshot(path=str(OUTPUT / "answered.png"), full_page=True)

            page.click("#rate-up")
            page.wait_for_function("document.body.dataset.state === 'rated'", timeout=30_000)
            assert page.inner_text("#rated") == "thanks: rating stored"
            page.screenshot(path=str(OUTPUT / "rated.png"), full_page=True)
        finally:
            browser.close()
    store = CanaryStore(DocumentStore(serve_app.mongodb_uri, serve_app.database).db)
    assert [(f.rating, f.version) for f in store.feedback("mara-lindqvist") if f.trace_id == trace_id] == [(1, "base")]
