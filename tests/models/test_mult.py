"""MulT's paper properties: crossmodal attention runs target <- source, and padding never reaches a prediction."""

from __future__ import annotations

import copy

import pytest
import torch

from affectfuse.config import InputSpec, Modalities
from affectfuse.config.registry import create_model
from affectfuse.data.batch import Batch
from affectfuse.models.mult import RECIPES, TemporalConv

from ..conftest import SPECS, TINY, make_batch


def build(spec: InputSpec, **overrides):
    torch.manual_seed(0)
    return create_model("mult", spec, **{**TINY["mult"], **overrides}).eval()


def sample(batch: Batch, i: int, lengths: dict[str, int] | None = None) -> Batch:
    """Sample i alone, optionally cut to `lengths` steps per modality."""
    lengths = lengths or {m: x.shape[1] for m, x in batch.features.items()}
    return Batch(
        features={m: x[i : i + 1, : lengths[m]] for m, x in batch.features.items()},
        masks={m: x[i : i + 1, : lengths[m]] for m, x in batch.masks.items()},
        label=batch.label[i : i + 1],
        ids=[batch.ids[i]],
    )


def test_crossmodal_streams_keep_the_target_length_and_read_only_their_source():
    model = build(SPECS["sentiment"])
    d = model.config.dim
    batch = make_batch(SPECS["sentiment"], 4)
    z, _ = model.crossmodal_streams(batch)
    for t in ("text", "audio", "vision"):
        assert z[t].shape == (4, batch.features[t].shape[1], 2 * d)  # target's length, [Z_{S1→T}; Z_{S2→T}]
    audio_to_text, vision_to_text = z["text"][..., :d], z["text"][..., d:]  # sources in order (audio, vision)

    garbage = copy.deepcopy(batch)  # the source's padded steps: nothing changes
    padded = ~garbage.masks["audio"]
    garbage.features["audio"][padded] = torch.randn(int(padded.sum()), 5) * 10
    torch.testing.assert_close(model.crossmodal_streams(garbage)[0]["text"], z["text"], rtol=0, atol=1e-6)

    changed = copy.deepcopy(batch)  # one real step of the source: Z_{A→L} changes, Z_{V→L} does not
    changed.features["audio"][:, 0] += 1.0
    z_changed, masks = model.crossmodal_streams(changed)
    real = masks["text"]
    assert (z_changed["text"][..., :d] - audio_to_text)[real].abs().amax(-1).gt(1e-4).all()
    torch.testing.assert_close(z_changed["text"][..., d:], vision_to_text, rtol=0, atol=1e-6)


def test_two_modalities_give_two_directional_pairs():
    spec = SPECS["no-text-traits"]
    model = build(spec)
    assert set(model.crossmodal) == {"vision_to_audio", "audio_to_vision"}
    assert model.text_encoder is None
    z, _ = model.crossmodal_streams(make_batch(spec, 3))
    assert {m: x.shape[-1] for m, x in z.items()} == {"audio": model.config.dim, "vision": model.config.dim}
    prediction = model(make_batch(spec, 3)).prediction
    assert prediction.shape == (3, 3) and torch.isfinite(prediction).all()


def test_attention_dropout_is_keyed_by_the_source_modality_as_the_official_get_network():
    model = build(SPECS["sentiment"], attn_dropout=Modalities(text=0.3, audio=0.1, vision=0.0))
    rates = {name: {layer.attn.dropout for layer in cm.layers} for name, cm in model.crossmodal.items()}
    assert rates["text_to_audio"] == rates["text_to_vision"] == {0.3}  # official trans_a_with_l: attn_dropout
    assert rates["audio_to_text"] == rates["audio_to_vision"] == {0.1}  # trans_l_with_a: attn_dropout_a
    assert rates["vision_to_text"] == rates["vision_to_audio"] == {0.0}


def test_one_modality_is_a_clear_error():
    with pytest.raises(ValueError, match="at least two modalities"):
        build(InputSpec(dims={"audio": 5}, lengths={"audio": 4}))


def test_readout_takes_the_last_real_step_whatever_the_padding():
    model = build(SPECS["sentiment"])
    batch = make_batch(SPECS["sentiment"], 4)
    together = model(batch).prediction
    for i in range(1, 4):  # samples 1..3 are padded (sample 0 is full length)
        lengths = {m: int(mask[i].sum()) for m, mask in batch.masks.items()}
        cut = model(sample(batch, i, lengths)).prediction  # no padding at all: its last step is its last real step
        torch.testing.assert_close(cut, together[i : i + 1], rtol=1e-5, atol=1e-5)
    front = copy.deepcopy(batch)  # the SDK pads at the front: move every sample's real steps to the end
    for m, mask in front.masks.items():
        order = torch.sort(mask.to(torch.int8), dim=1, stable=True).indices
        front.features[m] = torch.gather(front.features[m], 1, order[..., None].expand_as(front.features[m]))
        front.masks[m] = torch.gather(mask, 1, order)
    torch.testing.assert_close(model(front).prediction, together, rtol=1e-5, atol=1e-5)


def test_a_missing_modality_is_ignored_without_nan():
    model = build(SPECS["sentiment"])
    batch = make_batch(SPECS["sentiment"], 3)
    for m in ("text", "audio"):  # missing as a source and as a target
        missing = copy.deepcopy(batch)
        missing.masks[m][1] = False
        first = model(missing).prediction
        missing.features[m][1] = torch.randn_like(missing.features[m][1]) * 10
        assert torch.isfinite(first).all()
        torch.testing.assert_close(model(missing).prediction, first, rtol=0, atol=1e-6)


def test_temporal_conv_keeps_the_length_and_sees_zeros_past_the_real_steps():
    torch.manual_seed(0)
    conv = TemporalConv(4, 6, kernel=3)
    x, mask = torch.randn(2, 5, 4), torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)
    y = conv(x, mask)
    assert y.shape == (2, 5, 6)
    w = conv.conv.weight  # (d, D_in, k)
    torch.testing.assert_close(y[1, 2], w[:, :, 0] @ x[1, 2])  # last real step: the window's rest is zeros
    torch.testing.assert_close(y[0, 2], sum(w[:, :, j] @ x[0, 2 + j] for j in range(3)))
    x[1, 3:] = 100.0  # padding never leaks into real steps
    torch.testing.assert_close(conv(x, mask)[1, :3], y[1, :3])


def test_mosi_recipe_runs_on_utterance_level_features_and_short_batches():
    utterance = InputSpec(dims={"text": 7, "audio": 5, "vision": 6}, lengths={"text": 1, "audio": 1, "vision": 1})
    torch.manual_seed(0)
    model = create_model("mult", utterance, RECIPES["mosi"].model).eval()
    assert {m: c.kernel for m, c in model.conv.items()} == {"text": 1, "audio": 1, "vision": 1}  # clamped to T = 1
    assert torch.isfinite(model(make_batch(utterance, 2)).prediction).all()

    sequences = create_model("mult", SPECS["sentiment"], RECIPES["mosi"].model).eval()
    assert sequences.conv["audio"].kernel == 3
    batch = make_batch(SPECS["sentiment"], 2)
    short = sample(batch, 0, {"text": 2, "audio": 2, "vision": 2})  # a batch padded to fewer steps than the kernel
    longer = copy.deepcopy(short)
    for m in longer.features:
        longer.features[m] = torch.cat([longer.features[m], torch.randn(1, 4, longer.features[m].shape[-1])], 1)
        longer.masks[m] = torch.cat([longer.masks[m], torch.zeros(1, 4, dtype=torch.bool)], 1)
    torch.testing.assert_close(sequences(short).prediction, sequences(longer).prediction, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("t_text", "t_audio"), [(8, 6), (6, 8)])
def test_causal_mask_follows_the_official_rule(t_text, t_audio):
    """Query i of the target sees source steps j <= i + |T_S - T_T| (official future mask); off by default."""
    spec = InputSpec(dims={"text": 3, "audio": 4}, lengths={"text": t_text, "audio": t_audio})
    batch = Batch(
        features={"text": torch.randn(1, t_text, 3), "audio": torch.randn(1, t_audio, 4)},
        masks={"text": torch.ones(1, t_text, dtype=torch.bool), "audio": torch.ones(1, t_audio, dtype=torch.bool)},
        label=torch.zeros(1, 1),
        ids=["a"],
    )
    offset = abs(t_text - t_audio)
    for causal in (True, False):
        model = build(spec, causal=causal)
        z = model.crossmodal_streams(batch)[0]["text"]  # Z_{A→L}
        for j, seen in ((offset, True), (offset + 1, not causal)):
            changed = copy.deepcopy(batch)
            changed.features["audio"][0, j] += 1.0
            moved = (model.crossmodal_streams(changed)[0]["text"][0, 0] - z[0, 0]).abs().max() > 1e-5
            assert moved == seen, (causal, j)
        assert torch.isfinite(model(batch).prediction).all()


@pytest.mark.parametrize("name", list(RECIPES))
def test_every_recipe_builds_and_runs(name):
    spec = SPECS["emotions"] if name == "iemocap" else SPECS["no-text-traits"] if name == "pom" else SPECS["sentiment"]
    torch.manual_seed(0)
    model = create_model("mult", spec, RECIPES[name].model).eval()
    assert torch.isfinite(model(make_batch(spec, 2)).prediction).all()


def test_defaults_are_the_official_codes():
    from affectfuse.models.mult import MulTConfig

    config = MulTConfig()
    assert config.only == ()  # every modality a target: neither --lonly, --aonly nor --vonly
    assert (config.position_start, config.positions, config.separate_kv_dropout) == (1, True, True)
    assert config.init == "xavier"
    model = build(SPECS["sentiment"])
    encoder = model.crossmodal["audio_to_text"]
    assert encoder.position_start == 1 and encoder.separate_kv_dropout
    assert (encoder.layers[0].attn.to_q.bias == 0).all()  # fairseq's init: zero biases


@pytest.mark.parametrize("only", ["text", "audio", "vision"])
def test_partial_modes_keep_one_target(only):
    spec = SPECS["sentiment"]
    model = build(spec, only=(only,))
    assert set(model.self_attention) == {only}
    assert set(model.crossmodal) == {f"{s}_to_{only}" for s in ("text", "audio", "vision") if s != only}
    assert model.proj1.in_features == 2 * model.config.dim  # official partial mode: combined_dim = 2 d
    batch = make_batch(spec, 3)
    assert torch.isfinite(model(batch).prediction).all()
    full = build(spec)
    shared = {k: v for k, v in full.state_dict().items() if k.startswith(("conv.", "crossmodal."))}
    model.load_state_dict(shared, strict=False)
    z, _ = model.crossmodal_streams(batch)
    torch.testing.assert_close(z[only], full.crossmodal_streams(batch)[0][only])  # the kept stream is unchanged


def test_only_must_name_modalities_of_the_corpus():
    with pytest.raises(ValueError, match=r"only names \['speech'\]"):
        build(SPECS["sentiment"], only=("speech",))
    with pytest.raises(ValueError, match=r"only names \['text'\]"):
        build(SPECS["no-text-traits"], only=("text",))


def test_valid_convolution_shortens_the_real_steps_as_the_official_one():
    torch.manual_seed(0)
    conv = TemporalConv(4, 6, kernel=3, keep_length=False)
    x, mask = torch.randn(3, 5, 4), torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0]], dtype=torch.bool)
    y, out_mask = conv(x, mask), conv.output_mask(mask)
    assert y.shape == (3, 3, 6) and out_mask.tolist() == [[True] * 3, [True, False, False], [False] * 3]
    torch.testing.assert_close(y[0], torch.nn.functional.conv1d(x[0].T[None], conv.conv.weight)[0].T)
    short = conv(x[:, :2], mask[:, :2])  # a batch padded to fewer steps than the kernel: one masked step
    assert short.shape == (3, 1, 6) and not conv.output_mask(mask[:, :2]).any()
    model = build(SPECS["sentiment"], conv_keeps_length=False, kernel=Modalities(text=3, audio=2, vision=1))
    assert torch.isfinite(model(make_batch(SPECS["sentiment"], 3)).prediction).all()
