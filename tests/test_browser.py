"""The search page at ``/`` in a real headless Chromium against the real server.

Real parts only: the tiny model exported by ``export/build_engine.py``, the server in its own
uvicorn process with the embedded ONNX Runtime backend, a FAISS + SQLite index in a temp dir,
H.264/AAC clips encoded by FFmpeg, and Debian's chromium driven by Playwright. Screenshots go to
``artifacts/browser/``. Skipped (with the reason) only when chromium is not installed.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from browser_fixtures import (
    PemtServer,
    find_chromium,
    launch_chromium,
    make_clip,
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        find_chromium() is None,
        reason="chromium is not installed (scripts/sysdeps.sh installs it; "
        "or set PEMT_CHROMIUM to a Chromium binary)",
    ),
]

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "browser"
API_KEY = "browser-test-key"
MAX_DURATION_S = 7  # on the keyed server: the 9-s clip is too long
SYNC_S = 8  # on the open server: the 9-s clip goes through a background job
LABELS = ("tone", "chirp", "tone")
# Records every progress stage and percentage the page shows (uploads on localhost are quick).
WATCH_PROGRESS = """() => {
  window.__progress = [];
  const log = () => window.__progress.push([
    document.querySelector('#progress-stage').textContent,
    document.querySelector('#progress-bar').getAttribute('aria-valuenow'),
  ]);
  new MutationObserver(log).observe(document.querySelector('#progress'),
    { subtree: true, childList: true, characterData: true, attributes: true });
}"""
# Every form control and button has an accessible name.
UNNAMED_CONTROLS = """() => [...document.querySelectorAll('input, button, select, textarea')]
  .filter((e) => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
                 && !e.textContent.trim())
  .map((e) => e.id || e.outerHTML.slice(0, 60))"""
# Drops a file on the drop zone the way a browser does (DataTransfer with one File).
DROP_FILE = """([name, b64]) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const dt = new DataTransfer();
  dt.items.add(new File([bytes], name, { type: 'video/mp4' }));
  const zone = document.querySelector('#dropzone');
  for (const type of ['dragenter', 'dragover', 'drop']) {
    zone.dispatchEvent(new DragEvent(type, { bubbles: true, cancelable: true, dataTransfer: dt }));
  }
}"""
THUMBS_LOADED = """() => {
  const imgs = [...document.querySelectorAll('#grid .card img.thumb')];
  return imgs.length > 0 && imgs.every((i) => i.complete && i.naturalWidth > 0);
}"""


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("browser")


@pytest.fixture(scope="module")
def clips(workdir: Path) -> dict[str, Path]:
    d = workdir / "clips"
    d.mkdir()
    out = {
        f"seed{i}": make_clip(d / f"seed{i}.mp4", seconds=6.0, pattern=i, tone_hz=300.0 + 200 * i)
        for i in range(len(LABELS))
    }
    out["query"] = make_clip(d / "query.mp4", seconds=5.0, pattern=1, tone_hz=520.0)
    out["long"] = make_clip(d / "long.mp4", seconds=9.0, pattern=2)
    # random bytes over the middle quarter: the container opens, the media does not decode
    data = bytearray(out["query"].read_bytes())
    a, b = len(data) // 2 - len(data) // 8, len(data) // 2 + len(data) // 8
    data[a:b] = np.random.default_rng(0).integers(0, 256, b - a, dtype=np.uint8).tobytes()
    out["corrupt"] = d / "holiday.mp4"
    out["corrupt"].write_bytes(bytes(data))
    out["text"] = d / "notes.mp4"
    out["text"].write_text("this is not a video\n" * 50)
    return out


def _seed(server: PemtServer, clips: dict[str, Path]) -> None:
    for i, label in enumerate(LABELS):
        server.embed(
            clips[f"seed{i}"],
            clip_id=f"seed{i}",
            metadata={"label": label, "filename": f"seed{i}.mp4"},
        )


@pytest.fixture(scope="module")
def server(workdir: Path, repo: Path, clips: dict[str, Path]) -> Iterator[PemtServer]:
    # the 9-s clip is longer than this server embeds synchronously: the page makes it a job
    env = {"PEMT_EMBED_MAX_DURATION_S": str(SYNC_S)}
    with PemtServer(repo, workdir / "data-open", env=env) as s:
        _seed(s, clips)
        yield s


@pytest.fixture(scope="module")
def keyed_server(workdir: Path, repo: Path, clips: dict[str, Path]) -> Iterator[PemtServer]:
    env = {"PEMT_MAX_DURATION_S": str(MAX_DURATION_S)}
    with PemtServer(repo, workdir / "data-keyed", api_keys=[API_KEY], env=env) as s:
        _seed(s, clips)
        yield s


@pytest.fixture
def page(tmp_path: Path) -> Iterator[object]:
    """A fresh browser profile per test (so no API key is left in localStorage)."""
    with launch_chromium(tmp_path / "profile") as context:
        p = context.new_page()
        p.set_default_timeout(30_000)
        errors: list[str] = []
        p.on("pageerror", lambda e: errors.append(str(e)))
        yield p
        assert not errors, f"uncaught errors in the page: {errors}"


def _search(page, path: Path) -> None:
    page.set_input_files("#file", str(path))
    page.click("#submit")


def _play_preview(page) -> None:
    """Click the first card's play button: its <video> loads the clip's kept source
    (GET /clips/{id}/media, streamed by ranges or fetched with the API key) and seeks to the
    matching window."""
    card = page.query_selector("#grid .card:has(.play:not([hidden]))")
    assert card is not None
    card.query_selector(".play").click()
    handle = page.wait_for_function(
        """(card) => {
          const v = card.querySelector('video.preview');
          return v && v.readyState >= 1 && [v.readyState, v.duration, v.currentTime, v.src];
        }""",
        arg=card,
    )
    ready, dur, now, src = handle.json_value()
    assert ready >= 1 and dur > 4, (ready, dur, src)  # HAVE_METADATA of the 6-s seed clip
    assert src.startswith("blob:") or re.search(r"/clips/seed\d(%23w\d)?/media#", src), src
    start = re.search(r"#t=([\d.]+),[\d.]+$", src)
    assert start, src  # at the window's start (media fragment, or the page's own seek)
    assert now >= float(start.group(1)) - 0.3, (now, src)


def _error_text(page) -> str:
    page.wait_for_selector("#error:not([hidden])")
    return page.inner_text("#error")


def test_search_shows_results_with_thumbnails(page, server: PemtServer, clips) -> None:
    page.goto(server.page_url)
    page.wait_for_function("document.querySelector('#info-count').textContent.trim() !== '–'")
    assert page.inner_text("#info-count") == str(server.info()["count"])
    assert "onnx" in page.inner_text("#info-backend")
    assert page.evaluate(UNNAMED_CONTROLS) == []

    (server.data_dir / "media" / "seed2.mp4").unlink()  # as if stored with keep_media off
    page.evaluate(WATCH_PROGRESS)
    _search(page, clips["query"])
    page.wait_for_selector("#grid .card")
    stages = page.evaluate("window.__progress")
    assert any(s.startswith("Uploading query.mp4") and pct == "100" for s, pct in stages), stages
    assert any(s.startswith("Processing") for s, _ in stages), stages
    page.wait_for_function(THUMBS_LOADED)
    cards = page.query_selector_all("#grid .card")
    assert 1 <= len(cards) <= 8
    ids = [c.get_attribute("data-id") for c in cards]
    assert all(i and i.startswith("seed") for i in ids), ids
    first = cards[0]
    assert re.fullmatch(r"\d\d:\d\d-\d\d:\d\d", first.query_selector(".range").inner_text())
    assert re.fullmatch(r"-?\d\.\d{3}", first.query_selector(".score-value").inner_text())
    assert first.query_selector(".meta .is-label") is not None
    widths = page.eval_on_selector_all("#grid img.thumb", "els => els.map((e) => e.naturalWidth)")
    assert all(w > 0 for w in widths), widths
    # the server keeps the source videos (PEMT_KEEP_MEDIA defaults on): a player on each card
    # whose GET /clips/{id}/media answers, none where it is 404 (seed2's file removed above)
    page.wait_for_load_state("networkidle")
    players = page.eval_on_selector_all(
        "#grid .card", "els => els.map((e) => [e.dataset.id, !e.querySelector('.play').hidden])"
    )
    assert all(shown == (not i.startswith("seed2")) for i, shown in players), players
    _play_preview(page)

    page.wait_for_selector("#class-bars .class-bar")
    assert page.inner_text("#class-label").strip() in {"tone", "chirp"}
    assert page.is_hidden("#error")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "search.png"), full_page=True)

    # a phone-sized window: one column, nothing wider than the screen
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    page.screenshot(path=str(ARTIFACTS / "search-narrow.png"))


def test_add_to_index_with_label(page, server: PemtServer, clips) -> None:
    before = server.info()["count"]
    page.goto(server.page_url)
    path = clips["query"]
    page.evaluate(DROP_FILE, [path.name, base64.b64encode(path.read_bytes()).decode()])
    assert page.inner_text("#file-name") == path.name
    page.check("#store")
    page.fill("#label", "query clip")
    page.click("label[for=mod-best]")  # search by the best stream (the label vote stays on fused)
    page.click("#submit")
    page.wait_for_selector("#grid .card")
    page.wait_for_function(THUMBS_LOADED)
    # the stored windows of the upload itself are not listed as its own matches
    ids = page.eval_on_selector_all("#grid .card", "els => els.map((e) => e.dataset.id)")
    assert ids and all(i.startswith("seed") for i in ids), ids
    subs = page.eval_on_selector_all("#grid .card .sub", "els => els.map((e) => e.textContent)")
    assert all(re.search(r"matched on (sound|picture|sound and picture)$", t) for t in subs), subs
    page.wait_for_selector("#class-bars .class-bar")
    assert "best stream" in page.inner_text("#results-count")
    after = server.info()["count"]
    assert after > before
    page.wait_for_function(
        f"document.querySelector('#info-count').textContent.trim() === '{after}'"
    )
    assert "added to the index" in page.inner_text("#query-meta")


def test_a_long_upload_is_a_job_with_progress(page, server: PemtServer, clips) -> None:
    page.goto(server.page_url)
    page.wait_for_function("document.querySelector('#info-count').textContent.trim() !== '–'")
    path = clips["long"]
    # searching it without adding it: too long to search directly, and the page says what to do
    page.set_input_files("#file", str(path))
    page.wait_for_function("document.querySelector('#file-details').textContent.includes(':')")
    page.click("#submit")
    assert "Add this video to the index" in _error_text(page)
    # added to the index: a background job, its progress shown from GET /jobs/{id}
    page.check("#store")
    page.click("#submit")
    page.wait_for_function(
        "document.querySelector('#progress-stage').textContent.includes('in the background')"
        " || document.querySelector('#grid .card') !== null"
    )
    page.wait_for_selector("#grid .card")
    assert page.is_hidden("#error")
    (job,) = httpx.get(server.url + "/jobs").json()["items"]
    assert job["state"] == "done" and job["name"] == path.name, job
    assert "added to the index" in page.inner_text("#query-meta")
    ids = page.eval_on_selector_all("#grid .card", "els => els.map((e) => e.dataset.id)")
    assert ids and not any(i.startswith(job["clip_id"]) for i in ids), ids


def test_bad_files_show_plain_errors(page, server: PemtServer, clips) -> None:
    page.goto(server.page_url)
    page.set_input_files("#file", str(clips["corrupt"]))
    page.focus("#k")
    page.keyboard.press("Enter")  # the keyboard submits the form too
    text = _error_text(page)
    assert "This video file is damaged and can't be read." in text, text
    assert page.query_selector_all("#grid .card") == []
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "corrupt.png"))

    page.set_input_files("#file", str(clips["text"]))
    assert page.is_hidden("#error")  # choosing another file clears the old error
    page.click("#submit")
    page.wait_for_function(
        "document.querySelector('#error-title').textContent === \"This file isn't a video we can read.\""
    )
    page.click("#error-more summary")  # the server's own words are one click away
    assert "not_media" in page.inner_text("#error-detail")


def test_api_key_required_then_accepted(page, keyed_server: PemtServer, clips) -> None:
    page.goto(keyed_server.page_url)
    page.wait_for_selector("#info-note:not([hidden])")
    assert "API key" in page.inner_text("#info-note")

    _search(page, clips["query"])
    assert "This server needs an API key." in _error_text(page)
    assert page.evaluate("document.activeElement.id") == "api-key"

    page.fill("#api-key", "wrong-key")
    page.click("#submit")
    page.wait_for_function(
        "document.querySelector('#error-title').textContent.includes('not accepted')"
    )

    page.fill("#api-key", API_KEY)
    page.click("#submit")
    page.wait_for_selector("#grid .card")
    page.wait_for_function(THUMBS_LOADED)  # thumbnails too are fetched with the key
    assert page.is_hidden("#error")
    _play_preview(page)  # the source too: fetched with the key, played from a blob: URL
    assert page.evaluate("localStorage.getItem('pemt.apiKey')") == API_KEY
    page.reload()
    assert page.input_value("#api-key") == API_KEY

    # the limit comes from /info (seen once the key is there) and reads as plain words
    _search(page, clips["long"])
    text = _error_text(page)
    assert "This video is too long." in text and f"{MAX_DURATION_S} s or less" in text, text
