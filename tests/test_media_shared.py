"""A media folder that several API replicas share (Milvus backend): the store's lock holds
across processes (flock), and start-up cleaning leaves young staged files (another replica's
upload in flight) and every kept file alone."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from server.core.media import STAGED_GRACE_S, MediaStore

ROOT = Path(__file__).resolve().parent.parent
_HOLD = """
import sys, time
sys.path.insert(0, {root!r})
from server.core.media import MediaStore
store = MediaStore({path!r}, shared=True)
with store.lock:
    print("locked", flush=True)
    time.sleep(1.5)
"""


def test_lock_holds_across_processes(tmp_path: Path) -> None:
    store = MediaStore(tmp_path, shared=True)
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD.format(root=str(ROOT), path=str(tmp_path))],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        t0 = time.monotonic()
        with store.lock, store.lock:  # re-entrant within a thread
            waited = time.monotonic() - t0
        assert waited > 0.8, waited  # the other process held it
    finally:
        proc.wait(10)
    t0 = time.monotonic()
    with MediaStore(tmp_path).lock:  # an unshared store takes no file lock
        assert time.monotonic() - t0 < 0.5


def test_clean_in_a_shared_folder(tmp_path: Path) -> None:
    store = MediaStore(tmp_path, shared=True)
    young = tmp_path / ".staged-young.mp4"
    old = tmp_path / ".staged-old.mp4"
    kept = tmp_path / "clip1.mp4"
    for p in (young, old, kept):
        p.write_bytes(b"x")
    past = time.time() - STAGED_GRACE_S - 10
    os.utime(old, (past, past))
    assert store.clean(None) == 1
    assert young.exists() and kept.exists() and not old.exists()
    # unshared: every staged file goes, and orphans are checked against the index
    assert MediaStore(tmp_path).clean(lambda clip: False) == 2
    assert not young.exists() and not kept.exists()
