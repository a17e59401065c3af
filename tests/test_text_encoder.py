"""TextEncoder: identity for precomputed features; a local BERT for token ids, never downloaded; clear errors."""

from __future__ import annotations

import socket
import sys

import pytest
import torch
from torch import nn

from affectfuse.config import BERT_TOKENS, InputSpec, uses_bert_tokens
from affectfuse.models.text_encoder import TextEncoder, bert_param_groups, bert_parameter_names

T = 7
TOKEN_SPEC = InputSpec(dims={"text": 3, "audio": 5}, lengths={"text": T, "audio": 4}, extractors={"text": BERT_TOKENS})
FEATURE_SPEC = InputSpec(dims={"text": 4, "audio": 5}, lengths={"text": T, "audio": 4}, extractors={"text": "glove"})


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A random 2-layer BERT (hidden 16, vocab 120) saved with `save_pretrained` into a local directory."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=120,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
    )
    path = tmp_path_factory.mktemp("tiny_bert")
    transformers.BertModel(config).save_pretrained(path)
    return path


@pytest.fixture
def offline(monkeypatch):
    """Hugging Face offline mode, and any attempt to open a network connection fails the test."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")

    def refuse(*args, **kwargs):
        raise AssertionError("TextEncoder tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def tokens(batch_size: int = 3, lengths: tuple[int, ...] = (7, 4, 2)) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, 3) token steps ([CLS] words [SEP], then zero padding) and their (B, T) mask."""
    g = torch.Generator().manual_seed(1)
    mask = torch.arange(T)[None] < torch.tensor(lengths)[:, None]
    ids = torch.randint(5, 120, (batch_size, T), generator=g)
    ids[:, 0] = 101 % 120
    ids[torch.arange(batch_size), torch.tensor(lengths) - 1] = 102 % 120
    segments = (torch.arange(T)[None] >= 3).expand(batch_size, T)
    x = torch.stack([ids.float(), torch.ones(batch_size, T), segments.float()], dim=-1) * mask[..., None]
    return x, mask


# ---------------------------------------------------------------------------------------------------------------------
# Precomputed features and errors (no transformers needed)
# ---------------------------------------------------------------------------------------------------------------------


def test_precomputed_features_pass_through_and_bert_options_are_ignored():
    assert not uses_bert_tokens(FEATURE_SPEC) and uses_bert_tokens(TOKEN_SPEC)
    encoder = TextEncoder(FEATURE_SPEC, bert_path="/no/such/dir", finetune=False)
    x, mask = torch.randn(2, T, 4), torch.ones(2, T, dtype=torch.bool)
    assert encoder.out_dim == 4 and encoder(x, mask) is x
    assert list(encoder.parameters()) == [] and bert_param_groups(encoder, lr=1e-5, weight_decay=1e-3) == []


def test_a_corpus_without_text_has_no_text_encoder():
    with pytest.raises(ValueError, match="no text modality"):
        TextEncoder(InputSpec(dims={"audio": 5}, lengths={"audio": 4}))


def test_token_text_without_bert_path_says_what_to_set_and_how_to_get_a_model():
    with pytest.raises(ValueError, match="local BERT model directory") as err:
        TextEncoder(TOKEN_SPEC)
    message = str(err.value)
    assert "bert_path" in message and "save_pretrained" in message and "bert-base-uncased" in message
    assert "precomputed text features" in message


def test_missing_bert_path_is_named(tmp_path):
    missing = tmp_path / "pretrained_berts" / "bert_en"
    with pytest.raises(FileNotFoundError, match="bert_en"):
        TextEncoder(TOKEN_SPEC, bert_path=str(missing))


@pytest.mark.parametrize("files", [(), ("config.json",), ("model.safetensors",), ("vocab.txt", "notes.md")])
def test_a_directory_that_is_not_a_saved_model_is_named_with_the_expected_files(tmp_path, files):
    for name in files:
        (tmp_path / name).write_text("{}")
    with pytest.raises(ValueError, match="not a saved model directory") as err:
        TextEncoder(TOKEN_SPEC, bert_path=str(tmp_path))
    assert str(tmp_path) in str(err.value) and "config.json" in str(err.value) and "model.safetensors" in str(err.value)


def test_a_file_is_not_a_model_directory(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="not a directory"):
        TextEncoder(TOKEN_SPEC, bert_path=str(tmp_path / "config.json"))


def test_without_transformers_the_error_names_the_extra(tmp_path, monkeypatch):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "transformers", None)  # `import transformers` now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'affectfuse\[text\]'"):
        TextEncoder(TOKEN_SPEC, bert_path=str(tmp_path))


# ---------------------------------------------------------------------------------------------------------------------
# A tiny local BERT (needs transformers)
# ---------------------------------------------------------------------------------------------------------------------


def test_loads_a_local_bert_offline_and_encodes_tokens(tiny_bert, offline):
    encoder = TextEncoder(TOKEN_SPEC, bert_path=str(tiny_bert)).eval()
    x, mask = tokens()
    out = encoder(x, mask)
    assert encoder.out_dim == 16 and out.shape == (3, T, 16) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert encoder.bert.pooler is None  # unused by the methods: every remaining parameter gets a gradient


def test_padding_and_masked_positions_do_not_change_real_outputs(tiny_bert, offline):
    encoder = TextEncoder(TOKEN_SPEC, bert_path=str(tiny_bert)).eval()
    x, mask = tokens()
    out = encoder(x, mask)
    changed = x.clone()
    changed[..., 0] = torch.where(mask, x[..., 0], torch.full_like(x[..., 0], 77.0))  # other ids at padding
    changed[..., 2] = torch.where(mask, x[..., 2], torch.ones_like(x[..., 2]))
    torch.testing.assert_close(encoder(changed, mask)[mask], out[mask])
    # A position attended by its token mask but masked out by `mask` is not attended either.
    x[0, 6, 1], mask[1, 3] = 1.0, False
    full = mask.clone()
    full[1, 3] = True
    restricted = encoder(x, mask)
    changed = x.clone()
    changed[1, 3, 0] = 55.0
    torch.testing.assert_close(encoder(changed, mask)[1, :3], restricted[1, :3])
    assert not torch.allclose(encoder(changed, full)[1, :3], encoder(x, full)[1, :3])


def test_segment_ids_and_token_ids_are_used(tiny_bert, offline):
    encoder = TextEncoder(TOKEN_SPEC, bert_path=str(tiny_bert)).eval()
    x, mask = tokens()
    out = encoder(x, mask)
    other_segments = x.clone()
    other_segments[..., 2] = 1.0 - other_segments[..., 2]
    assert not torch.allclose(encoder(other_segments, mask)[0], out[0])
    other_ids = x.clone()
    other_ids[0, 2, 0] += 1.0
    assert not torch.allclose(encoder(other_ids, mask)[0], out[0])


def test_fine_tuned_bert_gets_gradients(tiny_bert, offline):
    encoder = TextEncoder(TOKEN_SPEC, bert_path=str(tiny_bert))
    x, mask = tokens()
    encoder(x, mask)[mask].pow(2).mean().backward()
    params = dict(encoder.named_parameters())
    assert params and all(p.grad is not None for p in params.values()), [n for n, p in params.items() if p.grad is None]
    assert any(p.grad.abs().sum() > 0 for p in params.values())


def test_frozen_bert_gets_no_gradients(tiny_bert, offline):
    encoder = TextEncoder(TOKEN_SPEC, bert_path=str(tiny_bert), finetune=False)
    head = nn.Linear(16, 1)
    x, mask = tokens()
    out = encoder(x, mask)
    assert not out.requires_grad
    head(out).sum().backward()
    assert head.weight.grad is not None
    assert all(not p.requires_grad and p.grad is None for p in encoder.parameters())
    assert bert_param_groups(encoder, lr=1e-5, weight_decay=1e-3) == []


def test_parameter_names_give_no_decay_to_biases_and_layer_norms(tiny_bert, offline):
    encoder = TextEncoder(TOKEN_SPEC, bert_path=str(tiny_bert))
    decay, no_decay = bert_parameter_names(encoder)
    names = {n for n, _ in encoder.named_parameters()}
    assert set(decay) | set(no_decay) == names and not set(decay) & set(no_decay)
    assert all(n.endswith(".bias") or "LayerNorm" in n for n in no_decay)
    assert "bert.embeddings.LayerNorm.weight" in no_decay and "bert.encoder.layer.0.output.dense.bias" in no_decay
    assert "bert.embeddings.word_embeddings.weight" in decay and not any("LayerNorm" in n for n in decay)
    groups = bert_param_groups(encoder, lr=5e-5, weight_decay=1e-3)
    assert [(g["lr"], g["weight_decay"], len(g["params"])) for g in groups] == [
        (5e-5, 1e-3, len(decay)),
        (5e-5, 0.0, len(no_decay)),
    ]


def test_loaded_weights_are_the_saved_ones(tiny_bert, offline):
    from safetensors.torch import load_file

    saved = load_file(str(tiny_bert / "model.safetensors"))
    loaded = TextEncoder(TOKEN_SPEC, bert_path=str(tiny_bert)).bert.state_dict()
    assert set(loaded) == {k for k in saved if not k.startswith("pooler.")}
    for name, tensor in loaded.items():
        torch.testing.assert_close(tensor, saved[name], msg=name)


def test_length_groups_give_the_padded_batchs_states_and_gradients(tiny_bert, offline, monkeypatch):
    """BERT run per group of similar lengths, each trimmed to its longest: the real tokens' states and every BERT
    gradient as one call over the padded batch; zeros at padded positions."""
    from affectfuse.models import text_encoder
    from affectfuse.models.layers import length_groups

    lengths = (7, 2, 6, 2, 3, 7, 2, 5)
    monkeypatch.setattr(text_encoder, "BERT_CALL_COST", 0.5)  # calls this cheap: several groups at these lengths
    assert len(length_groups(list(lengths), 0.5)) > 1
    encoder = TextEncoder(TOKEN_SPEC, bert_path=str(tiny_bert)).eval()
    x, mask = tokens(len(lengths), lengths)
    grouped = encoder(x, mask)
    whole = encoder.bert(input_ids=x[..., 0].long(), attention_mask=mask.long(),
                         token_type_ids=x[..., 2].long()).last_hidden_state
    torch.testing.assert_close(grouped[mask], whole[mask], atol=1e-5, rtol=0)
    assert grouped[~mask].abs().sum() == 0
    weights = torch.randn_like(grouped) * mask[..., None]
    params = [p for p in encoder.bert.parameters() if p.requires_grad]
    got = torch.autograd.grad((grouped * weights).sum(), params, allow_unused=True)
    want = torch.autograd.grad((whole * weights).sum(), params, allow_unused=True)
    for a, b in zip(got, want, strict=True):
        if b is not None:
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
