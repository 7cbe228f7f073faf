"""The pipelined embedder (pemt.infer): input order, batching, a bad file failing alone, and
the model step's options, on the CPU with the tiny model and real files."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from pemt.config import get_config
from pemt.infer import DecodePlan, ModelRunner, embed_files
from pemt.media import batch_windows, load_windows
from pemt.model import build_model


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(get_config("tiny")).eval()


def _direct(model, path):
    """The embedding of each window of ``path`` without the pipeline."""
    inputs = batch_windows(load_windows(path, model.cfg.media, decoder="cpu"))
    with torch.inference_mode():
        out = model(**{k: torch.from_numpy(v) for k, v in inputs.items()})
    return out["embedding"].numpy()


def test_results_in_input_order_and_bad_files_fail_alone(model, sample_media):
    names = ["long", "corrupt", "clip", "text", "webm", "empty", "clip"]
    files = [sample_media[n] for n in names]
    runner = ModelRunner(model, batch_size=4)
    results = list(embed_files(runner, files, model.cfg.media, plan=DecodePlan(cpu_threads=2)))
    assert [r.index for r in results] == list(range(len(files)))
    assert [r.path for r in results] == [str(f) for f in files]
    assert {n: r.error for n, r in zip(names, results, strict=True) if not r.ok} == {
        "corrupt": "corrupt",
        "text": "not_media",
        "empty": "empty",
    }
    for name, r in zip(names, results, strict=True):
        if r.ok:  # batched across files, the same vectors as one file at a time
            want = _direct(model, sample_media[name])
            assert r.vectors["embedding"].shape == want.shape
            np.testing.assert_allclose(r.vectors["embedding"], want, atol=2e-5)
            assert len(r.windows) == len(want) and r.decoder == "cpu"
        else:
            assert r.message and not r.windows and not r.vectors


def test_process_and_thread_decoders_together(model, sample_media):
    files = [sample_media[n] for n in ("clip", "vfr", "truncated", "long", "webm")]
    runner = ModelRunner(model, batch_size=3)
    plan = DecodePlan(cpu_threads=1, cpu_processes=1)
    results = list(embed_files(runner, files, model.cfg.media, plan=plan))
    assert [r.ok for r in results] == [True, True, False, True, True]
    assert results[2].error == "corrupt"
    np.testing.assert_allclose(
        results[3].vectors["embedding"], _direct(model, sample_media["long"]), atol=2e-5
    )


def test_a_model_failure_is_raised_not_blamed_on_a_file(model, sample_media):
    runner = ModelRunner(model, batch_size=2)
    # windows of more segments than the model has positions for: the model refuses them
    media = dataclasses.replace(model.cfg.media, num_segments=model.cfg.positions)
    files = [sample_media["clip"]] * 3
    with pytest.raises(ValueError, match="positions"):
        list(embed_files(runner, files, media, plan=DecodePlan(cpu_threads=1)))


def test_static_batches_and_channels_last_give_the_same_vectors(model, sample_media):
    windows = load_windows(sample_media["long"], model.cfg.media, decoder="cpu")[:3]
    plain = ModelRunner(model, batch_size=4, channels_last=False, static_batch=False)(windows)
    padded = ModelRunner(model, batch_size=8, channels_last=True, static_batch=True)
    assert padded.rows_for(3) == 4 and padded.rows_for(5) == 8 and padded.rows_for(8) == 8
    got = padded(windows)
    for k, v in plain.items():
        assert got[k].shape == v.shape
        np.testing.assert_allclose(got[k], v, atol=2e-5)


def test_plan_needs_a_decoder():
    with pytest.raises(ValueError, match="at least one decoder"):
        DecodePlan()
    assert DecodePlan.default("cpu").nvdec_threads == 0
