"""pemt.edits: every edit deterministic under a seed, shapes and dtypes kept, values checked on
cases worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from pemt import edits
from pemt.config import get_config

MEDIA = get_config("tiny").media
T, F, S = MEDIA.num_segments, MEDIA.frames_per_segment, MEDIA.image_size


def _window(valid: int = 3, seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (T, F, S, S, 3), dtype=np.uint8)
    audio = rng.normal(-6, 2, (T, MEDIA.n_mels, MEDIA.audio_frames)).astype(np.float32)
    vm = np.arange(T) < valid
    frames[~vm], audio[~vm] = 0, 0.0
    return frames, audio, vm, vm.copy()


@pytest.mark.parametrize("name", sorted(edits.VIEW_EDITS))
def test_each_view_edit_is_seeded_and_keeps_shapes(name: str) -> None:
    frames, audio, vm, am = _window()
    host = _window(seed=1)[0][:2]
    views = [
        edits.random_view(
            frames,
            audio,
            vm,
            am,
            np.random.default_rng(3),
            MEDIA,
            host=host,
            probabilities={name: 1.0},
        )  # fmt: skip
        for _ in range(2)
    ]
    a, b = views
    assert a.edits == [name] == b.edits
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.audio, b.audio)
    assert np.array_equal(a.visual_mask, b.visual_mask)
    for got, ref in ((a.frames, frames), (a.audio, audio), (a.visual_mask, vm), (a.audio_mask, am)):
        assert got.shape == ref.shape and got.dtype == ref.dtype
    assert not a.frames[~a.visual_mask].any() and not a.audio[~a.audio_mask].any()
    changed = not np.array_equal(a.frames, frames) or not np.array_equal(a.audio, audio)
    assert changed, f"{name} left the window unchanged"
    other = edits.random_view(frames, audio, vm, am, np.random.default_rng(4), MEDIA, host=host,
                              probabilities={name: 1.0})  # fmt: skip
    if name not in ("flip", "grayscale"):  # no random parameter beyond the amount
        assert not np.array_equal(other.frames, a.frames) or not np.array_equal(
            other.audio, a.audio
        )


def test_random_view_inputs_untouched_and_unknown_edit_refused() -> None:
    frames, audio, vm, am = _window()
    f0, a0 = frames.copy(), audio.copy()
    everything = dict.fromkeys(edits.VIEW_EDITS, 1.0)
    v = edits.random_view(frames, audio, vm, am, np.random.default_rng(0), MEDIA, host=frames[:1],
                          probabilities=everything)  # fmt: skip
    assert set(v.edits) == set(edits.VIEW_EDITS)
    assert np.array_equal(frames, f0) and np.array_equal(audio, a0)
    with pytest.raises(ValueError, match="unknown edits"):
        edits.random_view(frames, audio, vm, am, np.random.default_rng(0), MEDIA,
                          probabilities={"blur": 1.0})  # fmt: skip


def test_picture_edits_by_hand() -> None:
    x = np.zeros((2, 4, 4, 3), np.uint8)
    x[:, :, :2] = 200  # left half bright
    assert np.array_equal(edits.flip(x)[:, :, 2:], x[:, :, :2])
    assert np.array_equal(edits.resize(x, 4, 4), x)
    # a 2x shrink: a triangle filter two input pixels wide, weights 0.75, 0.75, 0.25 over the
    # pixels whose centres lie 0.5, 0.5, 1.5 away: 200 * 1.5 / 1.75 = 171.4
    assert edits.resize(x, 2, 2)[0, :, :, 0].tolist() == [[171, 29], [171, 29]]
    assert edits.crop(x, (0.0, 0.0, 0.5, 0.5)).shape == (2, 2, 2, 3)
    assert (edits.crop_resize(x, (0.0, 0.0, 1.0, 0.5)) == 200).all()  # left half zoomed
    g = edits.grayscale(np.array([[[255, 0, 0]]], np.uint8))
    assert g.tolist() == [[[76, 76, 76]]]  # 0.299 * 255
    assert edits.adjust(np.full((1, 1, 3), 100, np.uint8), 60).max() == 160
    assert edits.adjust(np.full((1, 1, 3), 250, np.uint8), 60).max() == 255  # clipped
    placed = edits.place(np.full((4, 4, 3), 255, np.uint8), (0.5, 0.5, 1.0, 1.0), (0, 0, 0))
    assert placed[2:, 2:].min() == 255 and placed[:2].max() == 0
    o = edits.overlay(x, (0.0, 0.0, 0.5, 1.0), (10, 20, 30))
    assert o[0, 0, 3].tolist() == [10, 20, 30] and np.array_equal(o[:, 2:], x[:, 2:])


def test_timeline_by_hand() -> None:
    assert edits.timeline(6, 6).tolist() == [0, 1, 2, 3, 4, 5]
    assert edits.timeline(6, 6, speed=1.5).tolist() == [0, 1, 3, 4, -1, -1]  # floor(1.5 j)
    assert edits.timeline(6, 6, offset=2).tolist() == [2, 3, 4, 5, -1, -1]
    assert edits.timeline(6, 6, hold=2).tolist() == [0, 0, 2, 2, 4, 4]
    with pytest.raises(ValueError):
        edits.timeline(6, 6, speed=0)


def test_speed_shortens_the_window_and_masks_follow() -> None:
    frames, audio, vm, am = _window(valid=4)
    v = edits.random_view(frames, audio, vm, am, np.random.default_rng(0), MEDIA,
                          probabilities={"speed": 1.0})  # fmt: skip
    assert 2 <= v.visual_mask.sum() < 4 and np.array_equal(v.visual_mask, v.audio_mask)
    # the first frame stays, later frames come from further along
    assert np.array_equal(v.frames[0, 0], frames[0, 0])


def test_sound_edits_by_hand() -> None:
    power = np.array([[1.0, 4.0], [0.0, 2.0]])
    x = np.log(1e-6 + power).astype(np.float32)
    np.testing.assert_allclose(
        np.exp(edits.mel_gain(x, 10.0)) - 1e-6, power * 10, rtol=1e-4, atol=1e-6
    )
    np.testing.assert_allclose(edits.mel_gain(x, 0.0), x, atol=1e-6)
    low = edits.mel_lowpass(np.zeros((16, 4), np.float32), 0.5)
    assert (low[:8] > -1e-5).all() and (low[12:] < -6.9).all()  # top bands 30 dB down
    same = edits.mel_pitch(x, 1.0, MEDIA)
    np.testing.assert_allclose(same, x, atol=1e-5)
    n1 = edits.mel_noise(x, 10.0, np.random.default_rng(0))
    assert np.array_equal(n1, edits.mel_noise(x, 10.0, np.random.default_rng(0)))
    assert (n1 >= x - 1e-6).all()  # noise adds power
    w = np.sin(np.arange(8000) / 10).astype(np.float32) * 0.5
    assert len(edits.wave_speed(w, 2.0)) == 4000
    np.testing.assert_allclose(edits.wave_speed(w, 2.0)[:100], w[:200:2], atol=1e-6)
    np.testing.assert_allclose(edits.wave_gain(w, -6.0), w * 10 ** (-6 / 20), rtol=1e-5)
