"""Damage, lost writes, backup and restore of server.index, on real files: SQLite databases
and WALs written by a real (killed) writer process, then zeroed, cut, overwritten or deleted."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from server.index import (
    IndexDamagedError,
    IndexLockedError,
    IndexMissingError,
    Record,
    VectorIndex,
    accept_index,
    backup_index,
    check_index,
    restore_index,
)

ROOT = Path(__file__).resolve().parents[1]
D = 32


def vec(i: int) -> np.ndarray:
    return np.random.default_rng(i).standard_normal(D).astype(np.float32)


def digests(path: Path) -> dict[str, str]:
    """sha256 of every file that holds data: not the lock, not SQLite's shared-memory index,
    not an empty WAL (a read-only connection may create one)."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.iterdir())
        if p.is_file()
        and p.name not in ("index.lock", "index.sqlite3-shm")
        and (p.stat().st_size or p.name != "index.sqlite3-wal")
    }


_CRASHING_WRITER = """
import os, sys, numpy as np
sys.path.insert(0, {root!r})
from server.index import VectorIndex
for half in (0, 1):
    ix = VectorIndex({path!r}, dim={dim})
    for i in range(half * {n} // 2, (half + 1) * {n} // 2):
        ix.upsert(f"c{{i}}", {{"fused": np.random.default_rng(i).standard_normal({dim})}})
        print(f"c{{i}}", flush=True)  # acknowledged
    if not half:
        ix.close()  # the first half goes into the database file
os.kill(os.getpid(), 9)  # a crash: no close, no checkpoint, the WAL holds the second half
"""


def crashed_index(path: Path, n: int) -> list[str]:
    """An index whose writer acknowledged ``n`` upserts, the second half of them still in the
    WAL when it was killed; returns the ids."""
    script = _CRASHING_WRITER.format(root=str(ROOT), path=str(path), dim=D, n=n)
    res = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == -signal.SIGKILL, res.stderr
    acked = res.stdout.split()
    assert len(acked) == n
    wal = path / "index.sqlite3-wal"
    assert wal.stat().st_size > 0, "the commits should still be in the WAL"
    return acked


@pytest.mark.parametrize("damage", ["truncate", "delete"])
def test_lost_wal_is_refused_then_accepted(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "ix"
    acked = crashed_index(path, 60)
    wal = path / "index.sqlite3-wal"
    if damage == "truncate":  # a damaged disk: the WAL's tail is gone
        os.truncate(wal, wal.stat().st_size * 2 // 3)
    else:
        wal.unlink()
    before = digests(path)
    with pytest.raises(IndexDamagedError) as err:
        VectorIndex(path)
    msg = str(err.value)
    assert "lost acknowledged writes" in msg and "but 60 writes (60 items" in msg, msg
    assert "pemt-server index restore" in msg and "pemt-server index accept" in msg
    assert digests(path) == before  # refused without touching a byte

    report = check_index(path)
    assert not report["ok"] and report["recorded_commits"] == 60
    survivors = report["items"]
    assert 30 <= survivors < 60 and (damage == "truncate" or survivors == 30)
    assert digests(path) == before

    accepted = accept_index(path)
    assert accepted["items"] == survivors and accepted["recorded_commits_before"] == 60
    with VectorIndex(path) as ix:
        assert ix.count() == survivors
        assert [ix.get(i) is not None for i in acked] == [True] * survivors + [False] * (
            60 - survivors
        )  # a WAL loses a tail of commits, never a middle one
        ix.upsert("after", {"fused": vec(999)})
    with VectorIndex(path) as ix:
        assert ix.count() == survivors + 1 and ix.search(vec(999), 1)[0].id == "after"


def _closed_index(path: Path, n: int = 300) -> None:
    with VectorIndex(path, dim=D) as ix:
        ix.upsert_many(Record(f"v{i}", {"fused": vec(i)}, {"n": i}) for i in range(n))
    assert not (path / "index.sqlite3-wal").exists()  # checkpointed into the database file


@pytest.mark.parametrize("damage", ["zeroed", "garbage", "cut", "bad_page", "missing", "empty"])
def test_damaged_or_lost_database_is_refused_untouched(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "ix"
    _closed_index(path)
    db = path / "index.sqlite3"
    size = db.stat().st_size
    if damage == "zeroed":
        db.write_bytes(bytes(size))
    elif damage == "garbage":
        db.write_bytes(np.random.default_rng(0).integers(0, 256, size, np.uint8).tobytes())
    elif damage == "cut":
        os.truncate(db, size // 2)
    elif damage == "bad_page":  # the header is fine; the items table's root page is not
        con = sqlite3.connect(db)
        (root,) = con.execute("SELECT rootpage FROM sqlite_master WHERE name='items'").fetchone()
        page = con.execute("PRAGMA page_size").fetchone()[0]
        con.close()
        with open(db, "r+b") as f:
            f.seek((root - 1) * page)
            f.write(np.random.default_rng(1).integers(0, 256, page, np.uint8).tobytes())
    elif damage == "missing":
        db.unlink()
    else:
        db.write_bytes(b"")
    before = digests(path)
    with pytest.raises(IndexDamagedError) as err:
        VectorIndex(path, dim=D)
    msg = str(err.value)
    unreadable = "is not a readable SQLite database"
    expected = {
        "zeroed": (unreadable,),
        "garbage": (unreadable,),
        "cut": (unreadable, "failed SQLite's integrity check"),  # as SQLite meets it
        "bad_page": (unreadable, "failed SQLite's integrity check"),
        "missing": ("is missing, but index.commits records 1 acknowledged writes (300 items)",),
        "empty": ("is empty (0 bytes), but index.commits records 1 acknowledged writes",),
    }[damage]
    assert any(e in msg for e in expected) and "Nothing was changed" in msg, msg
    assert digests(path) == before  # nothing written, nothing created
    assert not check_index(path)["ok"]


def test_create_false_and_one_owner(tmp_path: Path) -> None:
    with pytest.raises(IndexMissingError, match="holds no index"):
        VectorIndex(tmp_path / "new", dim=D, create=False)
    assert not (tmp_path / "new" / "index.sqlite3").exists()
    with VectorIndex(tmp_path / "ix", dim=D) as ix:
        ix.upsert("a", {"fused": vec(0)})
        with pytest.raises(IndexLockedError, match="one process owns an index directory"):
            VectorIndex(tmp_path / "ix")
        with pytest.raises(IndexLockedError):
            accept_index(tmp_path / "ix")
    with VectorIndex(tmp_path / "ix", create=False) as ix:  # released on close
        assert ix.count() == 1


def test_backup_while_writing_then_restore(tmp_path: Path) -> None:
    """Writes go on during the backup; the restored index holds every write acknowledged
    before the backup started, and no delete acknowledged before then was undone."""
    path = tmp_path / "ix"
    log: list[tuple[float, str, str]] = []  # (time acknowledged, op, id)
    started: dict[str, float] = {}  # id -> when its delete was started
    stop = threading.Event()
    with VectorIndex(path, dim=D, snapshots=True, snapshot_every=40) as ix:

        def writer() -> None:
            i = 0
            while not stop.is_set():
                ix.upsert(f"w{i}", {"fused": vec(i)}, metadata={"i": i})
                log.append((time.monotonic(), "put", f"w{i}"))
                if i % 4 == 3:
                    started[f"w{i - 2}"] = time.monotonic()
                    ix.delete(f"w{i - 2}")
                    log.append((time.monotonic(), "del", f"w{i - 2}"))
                i += 1

        t = threading.Thread(target=writer)
        t.start()
        while len(log) < 150:
            time.sleep(0.01)
        t0 = time.monotonic()
        manifest = backup_index(path, tmp_path / "backup")
        t1 = time.monotonic()
        n_before = len(log)
        while len(log) < n_before + 60:  # and the service keeps writing after it
            time.sleep(0.01)
        stop.set()
        t.join(30)
        assert not t.is_alive()
    assert (tmp_path / "backup" / "index.snapshot").exists()
    assert manifest["items"] > 0 and manifest["commits"] > 0

    result = restore_index(tmp_path / "backup", path)
    assert result["previous"] and Path(result["previous"]).is_dir()  # kept, not deleted
    with VectorIndex(path, snapshots=True) as ix:
        assert ix.count() == manifest["items"]
        for when, op, item in log:
            if when < t0 and op == "put" and not (item in started and started[item] < t1):
                got = ix.get(item)
                assert got is not None, item
                assert ix.search(vec(got.metadata["i"]), 1)[0].id == item
            if when < t0 and op == "del":
                assert ix.get(item) is None, item
        ix.upsert("after-restore", {"fused": vec(10_000)})
    with VectorIndex(path) as ix:  # the commit record matches the restored database
        assert ix.get("after-restore") is not None


def test_restore_refuses_a_damaged_backup(tmp_path: Path) -> None:
    path = tmp_path / "ix"
    _closed_index(path, 50)
    backup_index(path, tmp_path / "backup")
    db = tmp_path / "backup" / "index.sqlite3"
    data = bytearray(db.read_bytes())
    data[len(data) // 2] ^= 0xFF
    db.write_bytes(bytes(data))
    before = digests(path)
    with pytest.raises(ValueError, match="does not match backup.json"):
        restore_index(tmp_path / "backup", path)
    assert digests(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backup", "ix"]
