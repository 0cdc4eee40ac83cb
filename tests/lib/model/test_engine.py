"""The engine (EmotionModel) against funasr's own AutoModel.generate on the tiny random model.

The tiny model has what the real models have on the forward path: prenet blocks, extra tokens,
ALiBi with a learned per-head scale, the layer-norm conv extractor (checked below).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from emo_assets.lib.model.engine import EmotionModel, inference_dtype, prepare_module
from emo_assets.lib.model.scorer import ArrayReader, AudioReadError
from emo_assets.lib.model.settings import ModelSettings, torch_threads
from emo_assets.lib.model.windows import frame_keep_ranges, pack_batches, plan_windows, weighted_mean
from tests.funasr_reference import funasr_auto_model

SR = 16_000
# 32 clips: the 400-sample minimum and its neighbours, odd lengths, up to 6 s.
CLIP_LENGTHS = [
    400,
    401,
    405,
    479,
    480,
    719,
    720,
    1000,
    1599,
    1600,
    2345,
    3200,
    4001,
    5000,
    8000,
    9999,
    12_000,
    16_000,
    17_777,
    20_000,
    24_000,
    31_999,
    32_000,
    40_000,
    48_000,
    55_555,
    64_000,
    72_000,
    80_000,
    88_888,
    90_000,
    96_000,
]


def _engine(module, token_index=None, **settings) -> EmotionModel:
    return EmotionModel(module, ModelSettings(**settings), token_index=token_index)


def _clips(lengths, seed=0):
    rng = np.random.default_rng(seed)
    clips = []
    for i, n in enumerate(lengths):
        t = np.arange(n) / SR
        tone = 0.3 * np.sin(2 * np.pi * (120 + 40 * i) * t)
        clips.append((tone + rng.normal(0, 0.05 * (1 + i % 5), n) + 0.01 * i).astype(np.float32))
    return clips


@pytest.fixture(scope="module")
def auto_model(tiny_model_dir):
    return funasr_auto_model(tiny_model_dir)


@pytest.fixture(scope="module")
def clips():
    return _clips(CLIP_LENGTHS)


@pytest.fixture(scope="module")
def reference(auto_model, clips):
    out = []
    for clip in clips:
        res = auto_model.generate(clip, granularity="utterance", extract_embedding=True)[0]
        out.append((np.asarray(res["feats"]), np.asarray(res["scores"], dtype=np.float32)))
    return out


@pytest.mark.parametrize("policy, budget", [("per_clip", 0), ("masked", 8 * SR), ("masked", 40 * SR)])
def test_matches_funasr_generate_per_clip(auto_model, clips, reference, policy, budget):
    kwargs = {"max_batch_s": budget / SR} if budget else {}
    engine = _engine(auto_model.model, device="cpu", batch_policy=policy, **kwargs)
    outputs = engine.infer(clips)
    assert len(outputs) == len(clips)
    for n, out, (ref_emb, ref_scores) in zip(CLIP_LENGTHS, outputs, reference, strict=True):
        assert out.embedding.dtype == np.float32 and out.embedding.shape == ref_emb.shape
        assert np.abs(out.embedding - ref_emb).max() < 1e-4, n
        assert np.abs(out.scores - ref_scores).max() < 1e-5, n
        assert np.argmax(out.scores) == np.argmax(ref_scores), n
        assert len(out.segments) == 1 and out.segments[0].end_s == n / SR


def test_the_parity_model_runs_prenet_blocks_and_live_extra_tokens(auto_model, clips):
    """The parity tests above only cover the paths the model has. Like emotion2vec+ large (prenet 4
    + 8 blocks, 10 extra tokens), the tiny model has prenet blocks and extra tokens, and the extra
    tokens change every frame: a forward that dropped, mis-masked or mis-biased them fails parity."""
    module = auto_model.model
    enc = module.modality_encoders["AUDIO"]
    assert len(enc.context_encoder.blocks) == 1 and len(module.blocks) == 2
    assert enc.extra_tokens is not None and enc.extra_tokens.shape == (1, 10, 32)
    assert enc.alibi_scale.shape == (1, 1, 2, 1, 1) and enc.modality_cfg.extractor_mode == "layer_norm"
    without = copy.deepcopy(module)
    without.modality_encoders["AUDIO"].extra_tokens = None
    without.modality_encoders["AUDIO"].modality_cfg.num_extra_tokens = 0
    source = torch.nn.functional.layer_norm(torch.from_numpy(clips[12]), (len(clips[12]),)).view(1, -1)
    with torch.inference_mode():
        with_tokens = module.extract_features(source, padding_mask=None)["x"]
        without_tokens = without.extract_features(source, padding_mask=None)["x"]
    assert with_tokens.shape == without_tokens.shape
    assert (with_tokens - without_tokens).abs().amax(-1).min() > 1e-2  # every frame moves


def test_plain_padding_would_leak(auto_model, clips, reference):
    """Sanity check of the test itself: funasr's own padding_mask path is not exact."""
    module = auto_model.model
    short, long = clips[8], clips[20]
    batch = torch.zeros(2, len(long))
    batch[0, : len(short)] = torch.nn.functional.layer_norm(torch.from_numpy(short), (len(short),))
    batch[1] = torch.nn.functional.layer_norm(torch.from_numpy(long), (len(long),))
    mask = torch.arange(len(long)) >= torch.tensor([len(short), len(long)]).unsqueeze(1)
    with torch.inference_mode():
        x = module.extract_features(batch, padding_mask=mask)["x"][0]
    frames = _engine(module, device="cpu").infer_frames(short).embeddings
    assert np.abs(x[: len(frames)].mean(0).numpy() - reference[8][0]).max() > 1e-4


def test_frames_match_funasr_frame_granularity(auto_model, clips):
    engine = _engine(auto_model.model, device="cpu")
    for clip in (clips[0], clips[9], clips[-1]):
        ref = auto_model.generate(clip, granularity="frame", extract_embedding=True)[0]["feats"]
        out = engine.infer_frames(clip)
        assert out.embeddings.shape == ref.shape
        assert np.abs(out.embeddings - ref).max() < 1e-4
        assert out.scores.shape == (len(ref), 9)
        np.testing.assert_allclose(out.scores.sum(1), 1.0, atol=1e-5)
        np.testing.assert_allclose(out.times_s, np.arange(len(ref)) * 0.02)
        with torch.inference_mode():
            head = torch.softmax(auto_model.model.proj(torch.from_numpy(ref)), -1).numpy()
        assert np.abs(out.scores - head).max() < 1e-5


def test_token_index_reorders_and_renormalises(auto_model, clips, reference):
    order = [8, 0, 1, 2, 3, 4, 5, 6, 7]
    out = _engine(auto_model.model, device="cpu", token_index=order).infer(clips[:4])
    for o, (_, ref_scores) in zip(out, reference, strict=False):
        np.testing.assert_allclose(o.scores, ref_scores[order], atol=1e-6)
    sub = _engine(auto_model.model, device="cpu", token_index=[3, 4]).infer(clips[:1])[0]
    ref = reference[0][1][[3, 4]]
    np.testing.assert_allclose(sub.scores, ref / ref.sum(), atol=1e-6)


def test_long_recording_is_windowed(auto_model, clips):
    wave = np.concatenate(_clips([SR * 9, SR * 7, SR * 8 + 123], seed=3))  # 24 s
    engine = _engine(auto_model.model, device="cpu", window_s=10.0, window_overlap_s=1.0)
    out = engine.infer([wave, clips[5]])[0]
    spans = plan_windows(len(wave), window_s=10.0, overlap_s=1.0)
    assert [(s.start_s, s.end_s) for s in out.segments] == [(a / SR, b / SR) for a, b in spans]
    assert len(out.segments) == 3 and out.segments[-1].end_s == len(wave) / SR
    # Each window is scored exactly as that crop on its own.
    for seg in out.segments:
        crop = wave[round(seg.start_s * SR) : round(seg.end_s * SR)]
        alone = engine.infer([crop])[0]
        np.testing.assert_allclose(seg.embedding, alone.embedding, atol=1e-6)
        np.testing.assert_allclose(seg.scores, alone.scores, atol=1e-7)
    weights = [s.end_s - s.start_s for s in out.segments]
    expected = np.average([s.scores for s in out.segments], axis=0, weights=weights)
    np.testing.assert_allclose(out.scores, expected, atol=1e-6)
    np.testing.assert_allclose(out.scores.sum(), 1.0, atol=1e-5)
    # Masked batches of the windows give the same numbers.
    masked = _engine(auto_model.model, device="cpu", batch_policy="masked", window_s=10.0, window_overlap_s=1.0).infer(
        [wave]
    )[0]
    np.testing.assert_allclose(masked.embedding, out.embedding, atol=1e-5)


def test_long_recording_frames_have_no_duplicates(auto_model):
    wave = np.concatenate(_clips([SR * 9, SR * 9 + 77], seed=4))
    out = _engine(auto_model.model, device="cpu", window_s=5.0, window_overlap_s=1.0).infer_frames(wave)
    steps = np.diff(out.times_s)
    assert (steps > 0.01).all() and (steps <= 0.03 + 1e-9).all()
    assert abs(len(out.times_s) - len(wave) / 320) < 4
    assert out.embeddings.shape == (len(out.times_s), 32) and out.scores.shape == (len(out.times_s), 9)


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(min_value=400, max_value=SR * 600),
    window_s=st.sampled_from([2.0, 10.0, 30.0]),
    overlap_s=st.sampled_from([0.0, 0.5, 0.9]),
)
def test_window_rule(n, window_s, overlap_s):
    spans = plan_windows(n, window_s=window_s, overlap_s=overlap_s)
    window = round(window_s * SR)
    assert spans[0][0] == 0 and spans[-1][1] == n
    lengths = {e - s for s, e in spans}
    assert len(lengths) == 1 and lengths.pop() <= max(window, n if len(spans) == 1 else 0)
    for (s0, e0), (s1, e1) in zip(spans, spans[1:], strict=False):
        assert s0 < s1 and e0 - s1 >= round(overlap_s * SR)
        assert e1 - s1 > window / 2
    keep = frame_keep_ranges(spans, [(e - s) // 320 for s, e in spans], 320)
    assert all(lo <= hi for lo, hi in keep)


@pytest.mark.parametrize("window_s, overlap_s", [(0.0, 0.0), (10.0, 5.0), (10.0, -1.0)])
def test_window_rule_rejects_bad_settings(window_s, overlap_s):
    with pytest.raises(ValueError, match="window"):
        plan_windows(SR * 60, window_s=window_s, overlap_s=overlap_s)


@pytest.mark.parametrize(
    "lengths, budget",
    [([5, 3, 9, 9, 1], 18), ([100], 10), ([4] * 10, 16), ([7, 1, 1, 1, 1, 1, 1, 1], 8)],
)
def test_pack_batches_respects_the_budget(lengths, budget):
    batches = pack_batches(lengths, budget)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        longest = max(lengths[i] for i in b)
        assert len(b) == 1 or len(b) * longest <= budget
        assert lengths[b[0]] == longest


def test_weighted_mean():
    a, b = np.array([1.0, 0.0], np.float32), np.array([0.0, 1.0], np.float32)
    np.testing.assert_allclose(weighted_mean([a, b], [3.0, 1.0]), [0.75, 0.25])
    assert weighted_mean([a], [5.0]) is a


# ---- device, dtype, precision plumbing (CPU-only machines test the pure helpers) ----


@pytest.mark.parametrize(
    "device, half, dtype",
    [("cpu", False, torch.float32), ("cuda", False, torch.float32), ("cuda", True, torch.float16)],
)
def test_inference_dtype(device, half, dtype):
    settings = ModelSettings(device=device, half=half).resolved(cuda_devices=1)
    assert inference_dtype(settings.device, settings.half) == dtype


def test_prepare_module_casts_a_copy(auto_model):
    module = auto_model.model
    same = prepare_module(module, device=torch.device("cpu"), dtype=torch.float32, precision="fp32")
    assert same is module
    half = prepare_module(module, device=torch.device("cpu"), dtype=torch.bfloat16, precision="fp32")
    assert half is not module and next(half.parameters()).dtype == torch.bfloat16
    assert next(module.parameters()).dtype == torch.float32
    with pytest.raises(ValueError, match="int8"):
        prepare_module(module, device=torch.device("cuda"), dtype=torch.float32, precision="int8")
    with pytest.raises(ValueError, match="precision"):
        prepare_module(module, device=torch.device("cpu"), dtype=torch.float32, precision="fp8")


def test_int8_stays_close_to_fp32(auto_model, clips, reference):
    for kwargs in ({"precision": "int8"},):
        engine = _engine(auto_model.model, device="cpu", **kwargs)
        assert next(auto_model.model.parameters()).dtype == torch.float32
        for out, (ref_emb, ref_scores) in zip(engine.infer(clips[::4]), reference[::4], strict=True):
            cos = out.embedding @ ref_emb / np.linalg.norm(out.embedding) / np.linalg.norm(ref_emb)
            assert out.embedding.dtype == np.float32 and cos > 0.99, kwargs
            assert np.abs(out.scores - ref_scores).max() < 0.02, kwargs


def test_too_short_and_wrong_shape_clips_say_what_to_do(auto_model):
    engine = _engine(auto_model.model, device="cpu")
    assert engine.min_samples == 400
    with pytest.raises(ValueError, match="at least 400"):
        engine.infer([np.zeros(399, np.float32)])
    with pytest.raises(ValueError, match="mono"):
        engine.infer([np.zeros((2, 800), np.float32)])


def test_threads_are_restored():
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_front_end_in_chunks_is_exact(auto_model, clips):
    from emo_assets.lib.model.masked_forward import encode

    clip = torch.from_numpy(clips[-1]).view(1, -1)
    lengths = torch.tensor([clip.shape[1]])
    with torch.inference_mode():
        whole, _ = encode(auto_model.model, clip, lengths, front_end_chunk_frames=10_000)
        chunked, _ = encode(auto_model.model, clip, lengths, front_end_chunk_frames=7)
    assert whole.shape == chunked.shape
    assert (whole - chunked).abs().max() < 1e-5


def test_alibi_bias_is_funasrs_bit_for_bit():
    from funasr.models.emotion2vec.base import get_alibi_bias

    from emo_assets.lib.model.masked_forward import _alibi_bias

    scale = torch.rand(1, 1, 4, 1, 1)
    ref = get_alibi_bias({}, batch_size=1, time_steps=37, heads=4, dtype=torch.float32, device="cpu")
    ref = torch.nn.functional.pad(ref * scale.squeeze(0), (3, 0, 3, 0))
    assert torch.equal(_alibi_bias(4, 37, 3, scale.view(-1), torch.device("cpu")), ref)


# ---- recordings read through readers, window by window ----


class CountingReader(ArrayReader):
    """An in-memory recording that records every read."""

    def __init__(self, samples, fail_at: int | None = None):
        super().__init__(samples)
        self.reads: list[tuple[int, int]] = []
        self.fail_at = fail_at

    def read(self, offset, n):
        self.reads.append((offset, n))
        if self.fail_at is not None and offset >= self.fail_at:
            raise OSError("disk went away")
        return super().read(offset, n)


def test_a_long_recording_is_read_one_window_at_a_time(auto_model):
    wave = np.concatenate(_clips([SR * 9, SR * 7, SR * 8 + 123], seed=3))  # 24 s
    engine = _engine(auto_model.model, device="cpu", window_s=10.0, window_overlap_s=1.0)
    reader = CountingReader(wave)
    [result] = engine.score([reader])
    spans = plan_windows(len(wave), window_s=10.0, overlap_s=1.0)
    assert sorted(reader.reads) == [(a, b - a) for a, b in spans]  # each window read once, nothing more
    [same] = engine.infer([wave])
    np.testing.assert_array_equal(result.scores, same.scores)
    assert [(s.start_s, s.end_s) for s in result.segments] == [(a / SR, b / SR) for a, b in spans]


def test_frames_come_a_window_at_a_time_and_match_the_whole(auto_model):
    wave = np.concatenate(_clips([SR * 9, SR * 9 + 77], seed=4))
    engine = _engine(auto_model.model, device="cpu", window_s=5.0, window_overlap_s=1.0, threads=1)
    reader = CountingReader(wave)
    chunks = list(engine.frames(reader))
    spans = plan_windows(len(wave), window_s=5.0, overlap_s=1.0)
    assert len(chunks) == len(spans) and reader.reads == [(a, b - a) for a, b in spans]
    whole = engine.infer_frames(wave)
    np.testing.assert_array_equal(np.concatenate([c.times_s for c in chunks]), whole.times_s)
    np.testing.assert_allclose(np.concatenate([c.embeddings for c in chunks]), whole.embeddings, atol=1e-6)


def test_a_failing_reader_names_the_recording(auto_model, clips):
    engine = _engine(auto_model.model, device="cpu", window_s=2.0, window_overlap_s=0.5)
    good, bad = CountingReader(clips[-1]), CountingReader(clips[-1], fail_at=SR)
    with pytest.raises(AudioReadError, match="recording 1: audio unreadable: disk went away") as err:
        engine.score([good, bad])
    assert err.value.index == 1 and isinstance(err.value.__cause__, OSError)


def test_inference_leaves_torch_threads_as_it_found_them(auto_model, clips):
    before = torch.get_num_threads()
    engine = _engine(auto_model.model, device="cpu", threads=1)
    engine.infer(clips[:3])
    engine.infer_frames(clips[3])
    assert engine.workers == 1 and torch.get_num_threads() == before
