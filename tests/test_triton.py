"""A real Triton server (the tritonserver binary of nvidia-pytriton) serving the exported model.

One server per module: a tiny checkpoint exported with ``--triton-backend python`` into one
repository, twice as the single model ``pemt`` (versions 1 and 2) and as the ensemble ``pemt_ens``
(visual_cnn, audio_cnn, transformer + reshape steps). Outputs are compared with in-process ONNX
Runtime on the same model.onnx.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
grpcclient = pytest.importorskip("tritonclient.grpc")
httpclient = pytest.importorskip("tritonclient.http")

from tritonclient.utils import InferenceServerException  # noqa: E402

from pemt import spec  # noqa: E402
from pemt.config import get_config  # noqa: E402
from pemt.export import ort_run, ort_session, random_inputs  # noqa: E402
from pemt.triton_serve import TritonServer, triton_available  # noqa: E402

pytestmark = [
    pytest.mark.triton,
    pytest.mark.skipif(
        not triton_available(), reason="nvidia-pytriton's tritonserver not installed"
    ),
]

CFG = get_config("tiny")
MODELS = ("pemt", "pemt_ens")


def _export(ckpt: Path, out: Path, **kw: Any) -> None:
    """In-process ``build_engine.py --triton-backend python`` (test_export runs the CLI itself)."""
    from pemt.export import BuildOptions, build

    opts = BuildOptions(
        ckpt, out=out, triton_backend="python", real_clip=False, parity_batch=2, **kw
    )
    build(opts, log=lambda _: None)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from pemt.model import build_model, save

    tmp = tmp_path_factory.mktemp("triton")
    torch.manual_seed(0)
    ckpt = tmp / "tiny.safetensors"
    save(build_model(CFG).eval(), ckpt)
    out = tmp / "model_repository"
    _export(ckpt, out)  # single model "pemt"
    _export(ckpt, out)  # again: version 2 next to 1
    _export(ckpt, out, layout="ensemble", name="pemt_ens")
    return out


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[TritonServer]:
    # log_verbose=1: Triton logs each warmup sample it runs
    with TritonServer(repo, models=list(MODELS), log_verbose=1) as s:
        yield s


@pytest.fixture(scope="module")
def grpc(server: TritonServer) -> Iterator[Any]:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    yield client
    client.close()  # before the server stops, or its shutdown waits 30 s


@pytest.fixture(scope="module")
def http(server: TritonServer) -> Iterator[Any]:
    client = httpclient.InferenceServerClient(server.http_url, concurrency=8)
    yield client
    client.close()


@pytest.fixture(scope="module")
def ort(repo: Path) -> Any:
    return ort_session(repo / "pemt" / "2" / "model.onnx")


def _inputs(module: Any, x: dict[str, np.ndarray]) -> list:
    return spec.triton_request(module, spec.model_inputs(CFG), x, [])[0]


def _wrong_inputs(module: Any, x: dict[str, np.ndarray], datatypes: dict[str, str]) -> list:
    """Inputs that break pemt.spec on purpose (triton_request refuses to build them)."""
    out = []
    for s in spec.model_inputs(CFG):
        t = module.InferInput(s.name, list(x[s.name].shape), datatypes.get(s.name, s.wire_dtype))
        t.set_data_from_numpy(x[s.name])
        out.append(t)
    return out


def _check(result: Any, ref: dict[str, np.ndarray]) -> None:
    for s in spec.model_outputs(CFG):
        got = result.as_numpy(s.name)
        assert got.dtype == np.float32 and got.shape == ref[s.name].shape, s.name
        np.testing.assert_allclose(got, ref[s.name], rtol=1e-5, atol=1e-5, err_msg=s.name)


def test_health_ready(server: TritonServer, grpc: Any, http: Any) -> None:
    with urllib.request.urlopen(f"http://{server.http_url}/v2/health/ready", timeout=5) as r:
        assert r.status == 200
    assert grpc.is_server_live() and grpc.is_server_ready()
    assert http.is_server_ready()
    for name in MODELS:
        assert grpc.is_model_ready(name)
    meta = grpc.get_model_metadata("pemt", as_json=True)
    assert [i["name"] for i in meta["inputs"]] == [s.name for s in spec.model_inputs(CFG)]
    assert [o["datatype"] for o in meta["outputs"]] == ["FP32"] * 6


@pytest.mark.parametrize("model", MODELS)
def test_grpc_matches_onnxruntime(grpc: Any, ort: Any, model: str) -> None:
    x = random_inputs(spec.model_inputs(CFG), batch=3, seed=11)
    _check(grpc.infer(model, _inputs(grpcclient, x)), ort_run(ort, x))


@pytest.mark.parametrize("model", MODELS)
def test_http_matches_onnxruntime(http: Any, ort: Any, model: str) -> None:
    x = random_inputs(spec.model_inputs(CFG), batch=2, seed=12)
    _check(http.infer(model, _inputs(httpclient, x)), ort_run(ort, x))


def _counts(client: Any, model: str) -> tuple[int, int]:
    st = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
    return int(st.get("inference_count", 0)), int(st.get("execution_count", 0))


def test_concurrent_requests_are_batched(grpc: Any, ort: Any) -> None:
    """16 one-window requests in flight at once: the dynamic batcher merges them, which Triton's
    statistics show as fewer executions than inferences; every answer is still its own."""
    n = 16
    xs = [random_inputs(spec.model_inputs(CFG), batch=1, seed=100 + i) for i in range(n)]
    inf0, exe0 = _counts(grpc, "pemt")
    results: list[Any] = [None] * n
    errors: list[Any] = []

    def done(i: int) -> Any:
        def cb(result: Any, error: Any) -> None:
            results[i] = result
            if error is not None:
                errors.append(error)

        return cb

    for i, x in enumerate(xs):
        grpc.async_infer("pemt", _inputs(grpcclient, x), callback=done(i))
    import time

    deadline = time.monotonic() + 60
    while any(r is None for r in results) and not errors and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not errors, errors
    assert all(r is not None for r in results), "timed out waiting for async results"
    for x, r in zip(xs, results, strict=True):
        _check(r, ort_run(ort, x))
    inf1, exe1 = _counts(grpc, "pemt")
    inferences, executions = inf1 - inf0, exe1 - exe0
    assert inferences == n
    assert executions < inferences, f"{executions} executions for {inferences} inferences"


def test_ensemble_batches_cnns_per_segment(grpc: Any) -> None:
    """The ensemble's CNN models see B*T segment rows per window batch."""
    inf0, _ = _counts(grpc, "visual_cnn")
    x = random_inputs(spec.model_inputs(CFG), batch=2, seed=13)
    grpc.infer("pemt_ens", _inputs(grpcclient, x))
    inf1, _ = _counts(grpc, "visual_cnn")
    assert inf1 - inf0 == 2 * CFG.media.num_segments


def test_wrong_dtype_is_rejected(grpc: Any, http: Any) -> None:
    x = random_inputs(spec.model_inputs(CFG), batch=1, seed=14)
    x["frames"] = x["frames"].astype(np.float32)
    with pytest.raises(InferenceServerException, match=r"(?i)frames.*(data-type|datatype)"):
        grpc.infer("pemt", _wrong_inputs(grpcclient, x, {"frames": "FP32"}))
    with pytest.raises(InferenceServerException, match=r"(?i)frames.*(data-type|datatype)"):
        http.infer("pemt", _wrong_inputs(httpclient, x, {"frames": "FP32"}))


def test_wrong_shape_is_rejected(grpc: Any) -> None:
    x = random_inputs(spec.model_inputs(CFG), batch=1, seed=15)
    x["audio"] = x["audio"][:, :, :, :-1]  # one STFT frame short
    with pytest.raises(InferenceServerException, match=r"(?i)audio.*shape"):
        grpc.infer("pemt", _wrong_inputs(grpcclient, x, {}))
    x = random_inputs(spec.model_inputs(CFG), batch=9, seed=16)  # > max_batch_size 8
    with pytest.raises(InferenceServerException, match=r"(?i)batch"):
        grpc.infer("pemt", _inputs(grpcclient, x))


def test_newest_version_is_served_after_warmup(server: TritonServer, grpc: Any) -> None:
    """Two exports of "pemt" are versions 1 and 2; Triton serves 2 (version_policy latest 1)
    and ran every compute model's warmup sample before it was ready; ensembles have none."""
    assert grpc.is_model_ready("pemt", "2") and not grpc.is_model_ready("pemt", "1")
    assert grpc.get_model_metadata("pemt", as_json=True)["versions"] == ["2"]
    logs = server.logs()
    for model in ("pemt", spec.ENSEMBLE_VISUAL_CNN, spec.ENSEMBLE_AUDIO_CNN, "transformer"):
        assert f"running warmup sample '{model}_batch_1'" in logs, model
    assert "warmup sample 'pemt_ens" not in logs
    config = grpc.get_model_config("pemt", as_json=True)["config"]
    assert [w["batch_size"] for w in config["model_warmup"]] == [1]  # python backend: CPU
