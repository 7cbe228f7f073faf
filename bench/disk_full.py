"""What the service answers when its disk is full: a real full disk (a 4 MiB tmpfs as the data
directory, filled with a ballast file to an exact number of free bytes). Needs root.

    sudo .venv/bin/python bench/disk_full.py [--code-root DIR] [--repo DIR] [--out FILE]

Three acknowledged uploads first, then: (1) free space under PEMT_MIN_FREE_BYTES (16 KiB here)
with a Content-Length upload, (2) a chunked upload that fills the disk while it is written,
(3) a chunked upload that fits while the index write after it does not; then the ballast goes
and one more upload is sent. Prints each answer, ``/readyz`` alongside, and whether the
acknowledged clips are all still found. ``--code-root`` runs the service from another source
tree (an older commit unpacked with ``git archive``) to compare.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pemt.media.encode import make_test_video  # noqa: E402
from server.testing import ServerProcess, build_test_repository  # noqa: E402

PAGE = 4096
MIN_FREE = 16 * 1024


def leave_free(disk: Path, target: int) -> None:
    ballast = disk / "ballast.bin"
    size = (ballast.stat().st_size if ballast.exists() else 0) + shutil.disk_usage(disk).free
    with open(ballast, "ab") as f:
        f.truncate(0)
        f.write(bytes(max(size - target, 0)))


def post(c: httpx.Client, path: Path, item: str, chunked: bool) -> httpx.Response:
    b = "benchboundary"
    body = (
        (
            f'--{b}\r\nContent-Disposition: form-data; name="id"\r\n\r\n{item}\r\n'
            f'--{b}\r\nContent-Disposition: form-data; name="file"; filename="c.mp4"\r\n'
            "Content-Type: video/mp4\r\n\r\n"
        ).encode()
        + path.read_bytes()
        + f"\r\n--{b}--\r\n".encode()
    )
    return c.post(
        "/embed",
        content=iter([body]) if chunked else body,
        headers={"content-type": f"multipart/form-data; boundary={b}"},
    )


def answer(r: httpx.Response) -> str:
    if r.status_code == 200:
        return "200"
    err = r.json().get("error", {})
    extra = f", Retry-After {r.headers['retry-after']}" if "retry-after" in r.headers else ""
    return f"{r.status_code} `{err.get('code')}`{extra}: {err.get('message', '')[:100]}"


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--code-root", type=Path, help="run the service from this source tree")
    ap.add_argument("--repo", type=Path, help="an existing model repository (skips the export)")
    ap.add_argument("--label", default="")
    ap.add_argument("--out", type=Path, help="append the markdown report here")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="pemt-disk-full-"))
    repo = args.repo or build_test_repository(tmp / "repo", "tiny")
    clips = [
        make_test_video(tmp / f"c{i}.mp4", seconds=2, width=64, height=48, pattern=i)
        for i in range(4)
    ]
    disk = tmp / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], check=True)
    root = (args.code_root or Path(__file__).resolve().parent.parent).resolve()
    env = {
        "PEMT_MODEL_PATH": str(repo),
        "PEMT_DATA_DIR": str(disk / "data"),
        "PEMT_MIN_FREE_BYTES": str(MIN_FREE),
        "PEMT_DECODE_WORKERS": "1",
    }
    if args.code_root:
        env["PYTHONPATH"] = str(root)
    rows = []
    srv = ServerProcess(env, cwd=root, log_path=tmp / "server.log").start()
    try:
        with httpx.Client(base_url=srv.url, timeout=60) as c:
            acked = {}
            for i in range(3):
                r = post(c, clips[i], f"ok{i}", chunked=False)
                acked[f"ok{i}"] = r.json()["items"][0]["embedding"]
            pages = (clips[3].stat().st_size + PAGE - 1) // PAGE
            cases = [
                ("free < PEMT_MIN_FREE_BYTES, Content-Length upload", MIN_FREE - PAGE, False),
                ("disk fills while the upload is written (chunked)", MIN_FREE + PAGE, True),
                ("upload fits, the index write does not (chunked)", (pages + 2) * PAGE, True),
            ]
            for i, (what, free, chunked) in enumerate(cases):
                leave_free(disk, free)
                ready = c.get("/readyz").status_code
                r = post(c, clips[3], f"full{i}", chunked)
                rows.append((what, free, ready, answer(r)))
            (disk / "ballast.bin").unlink()
            free = shutil.disk_usage(disk).free
            ready = c.get("/readyz").status_code
            r = post(c, clips[3], "after", chunked=True)
            rows.append(("ballast removed", free, ready, answer(r)))
            found = 0
            for item, vec in acked.items():
                hits = c.post("/search", json={"vector": vec, "k": 1}).json()["results"]
                found += hits[0]["id"] == item
    finally:
        srv.stop()
        subprocess.run(["umount", "-l", str(disk)], check=False)
    lines = [
        f"### {args.label or root.name}: full data directory (4 MiB tmpfs)",
        "",
        f"- command: `python {shlex.join(sys.argv)}`",
        f"- machine: 2-core shared CPU box; service from `{root}`",
        "",
        "| case | free bytes | /readyz | POST /embed answer |",
        "| --- | ---: | ---: | --- |",
        *(f"| {w} | {f} | {rd} | {a} |" for w, f, rd, a in rows),
        "",
        f"acknowledged clips found by their vectors afterwards: {found} of {len(acked)}",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "a") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
