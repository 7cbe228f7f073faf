"""Model identity: an index records the model that wrote it; a service started with another
model of the same size refuses it (both backends), naming both models and how to re-index.
Real exports (export/build_engine.py), real uvicorn, real FAISS/SQLite and milvus-lite."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from pemt.media.encode import make_test_video
from server.testing import ServerProcess, build_test_repository


@pytest.fixture(scope="module")
def other_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same ``tiny`` config (same 32-d vectors) with other weights: another model."""
    return build_test_repository(tmp_path_factory.mktemp("other") / "repo", seed=1)


def test_an_index_refuses_a_model_that_did_not_write_it(
    repo: Path, other_repo: Path, tmp_path: Path, index_env: dict[str, str]
) -> None:
    clip = make_test_video(tmp_path / "c.mp4", seconds=2, width=64, height=48)
    env = {"PEMT_DATA_DIR": str(tmp_path / "data"), **index_env}
    with ServerProcess({**env, "PEMT_MODEL_PATH": str(repo)}, log_path=tmp_path / "a.log") as srv:
        info = httpx.get(srv.url + "/info").json()["model"]
        version = info["version"]
        assert version.startswith("tiny-") and len(info["identity"]["weights_sha256"]) == 64
        r = httpx.post(srv.url + "/embed", files={"file": ("c.mp4", clip.read_bytes())})
        assert r.status_code == 200 and r.headers["x-pemt-model-version"] == version

    other = ServerProcess({**env, "PEMT_MODEL_PATH": str(other_repo)}, log_path=tmp_path / "b.log")
    with pytest.raises(RuntimeError, match="exited with 3") as err:
        other.start()
    other.stop()
    msg = str(err.value)
    assert "refusing to start" in msg and version in msg and "re-index" in msg
    other_version = msg.split("this service runs model ")[1].split(" ")[0]
    assert other_version.startswith("tiny-") and other_version != version

    # the model that wrote it is served again: starts, and finds what it wrote
    with ServerProcess({**env, "PEMT_MODEL_PATH": str(repo)}, log_path=tmp_path / "c.log") as srv:
        assert httpx.get(srv.url + "/info").json()["count"] == 1
