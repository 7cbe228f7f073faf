"""The real PEMT HTTP server and a real headless Chromium, for the browser tests of the page.

A plain library (no pytest at module level), like ``pemt/triton_serve.py``:

    repo = build_test_repository(tmp / "repo")  # server.testing: export/build_engine.py, tiny
    with PemtServer(repo, tmp / "data", api_keys=["k"]) as server:
        server.embed(make_clip(tmp / "a.mp4"), metadata={"label": "tone"})
        with launch_chromium(tmp / "profile") as context:
            page = context.new_page()
            page.goto(server.page_url)

The server runs in its own process (``server.testing.ServerProcess``: uvicorn on 127.0.0.1 and a
free port) with the embedded ONNX Runtime backend on that repository.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from server.testing import ServerProcess

__all__ = [
    "CHROMIUM_FLAGS",
    "PemtServer",
    "find_chromium",
    "launch_chromium",
    "make_clip",
]

# Quiet, reproducible, offline Chromium. Playwright adds --headless itself (headless=True).
CHROMIUM_FLAGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def find_chromium() -> str | None:
    """Debian's chromium (``scripts/sysdeps.sh`` installs it), or ``PEMT_CHROMIUM``."""
    for candidate in (
        os.environ.get("PEMT_CHROMIUM"),
        shutil.which("chromium"),
        "/usr/bin/chromium",
    ):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def make_clip(
    path: Path, *, seconds: float = 6.0, pattern: int = 0, tone_hz: float = 440.0
) -> Path:
    """A real H.264/AAC MP4 encoded by FFmpeg through PyAV (``pemt.media.encode``)."""
    from pemt.media.encode import make_test_video

    return make_test_video(
        path, seconds=seconds, width=160, height=120, fps=8, pattern=pattern, tone_hz=tone_hz
    )


class PemtServer(ServerProcess):
    """The real service (``server.testing.ServerProcess``: uvicorn in a subprocess) on the
    embedded ONNX Runtime backend, plus the two API calls the tests use to set up the index."""

    def __init__(
        self,
        model_path: Path,
        data_dir: Path,
        *,
        api_keys: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        data_dir = Path(data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        self.api_keys = list(api_keys)
        self.data_dir = data_dir
        super().__init__(
            {
                "PEMT_BACKEND": "onnx",
                "PEMT_MODEL_PATH": str(model_path),
                "PEMT_DATA_DIR": str(data_dir),
                "PEMT_API_KEYS": ",".join(self.api_keys),
                "PEMT_DECODE_WORKERS": "1",
                **(env or {}),
            },
            log_path=data_dir.parent / f"{data_dir.name}-server.log",
        )

    @property
    def page_url(self) -> str:
        return self.url + "/"

    def _headers(self) -> dict[str, str]:
        return {"X-API-Key": self.api_keys[0]} if self.api_keys else {}

    def embed(
        self, path: Path, *, metadata: Mapping[str, Any] | None = None, clip_id: str | None = None
    ) -> dict[str, Any]:
        data = {"metadata": json.dumps(dict(metadata or {})), "store": "true"}
        if clip_id:
            data["id"] = clip_id
        with open(path, "rb") as f:
            r = httpx.post(
                self.url + "/embed",
                headers=self._headers(),
                data=data,
                files={"file": (Path(path).name, f, "video/mp4")},
                timeout=60,
            )
        if r.status_code != 200:
            raise AssertionError(f"POST /embed {Path(path).name}: {r.status_code} {r.text}")
        return r.json()

    def info(self) -> dict[str, Any]:
        r = httpx.get(self.url + "/info", headers=self._headers(), timeout=10)
        r.raise_for_status()
        return r.json()


@contextlib.contextmanager
def launch_chromium(
    user_data_dir: Path | None = None,
    *,
    executable: str | None = None,
    viewport: tuple[int, int] = (1360, 900),
) -> Iterator[Any]:
    """A Playwright persistent context on Debian's chromium with a fresh profile directory."""
    from playwright.sync_api import sync_playwright

    exe = executable or find_chromium()
    if exe is None:
        raise FileNotFoundError(
            "chromium not found; install it (scripts/sysdeps.sh) or set PEMT_CHROMIUM"
        )
    own_dir = user_data_dir is None
    profile = Path(user_data_dir or tempfile.mkdtemp(prefix="pemt-chromium-"))
    try:
        with sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(
                str(profile),
                executable_path=exe,
                headless=True,
                args=list(CHROMIUM_FLAGS),
                viewport={"width": viewport[0], "height": viewport[1]},
            )
            try:
                yield context
            finally:
                context.close()
    finally:
        if own_dir:
            shutil.rmtree(profile, ignore_errors=True)
