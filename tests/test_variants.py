"""Named variants (`method:variant`) and the switches behind them: DMD's ablation (Table 3), MulT + GD (DMD's Table 5),
EMT-DLFR's fusion strategies and restoration ablation. A switch that is off must change the computation: its
modules are gone (no parameters, so none without a gradient), its loss terms are absent, and the objective moves by
exactly the removed terms."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from affectfuse.config.registry import (
    Variant,
    _variant_entry,
    create_model,
    get_entry,
    list_variants,
    make_config,
)
from affectfuse.efficiency.counting import count_flops
from affectfuse.engine.checkpoint import load_model, save_checkpoint
from affectfuse.robustness.missing import drop_features

from .conftest import SPECS, TINY, make_batch

VARIANTS = list_variants()
SPEC = SPECS["sentiment"]


def build(name: str, **extra):
    torch.manual_seed(0)
    return create_model(name, SPEC, **{**TINY[name.partition(":")[0]], **extra})


def twin(full, name: str, **extra):
    """`name` holding `full`'s weights; returns it and the keys of `full` it has no place for. Only training-only
    modules (`aux`) may be new (MulT + GD's)."""
    model = build(name, **extra)
    missing, unexpected = model.load_state_dict(full.state_dict(), strict=False)
    assert all(k.startswith("aux.") for k in missing), f"{name} has parameters the full model lacks: {missing}"
    return model.train(full.training), set(unexpected)


def test_the_tables_variants_are_registered():
    assert {"dmd:no_hetero_gd", "dmd:no_ca", "dmd:no_ca_hetero_gd", "dmd:fd_only", "dmd:none", "mult:gd",
            "emt_dlfr:ooll", "emt_dlfr:oall", "emt_dlfr:no_restoration", "emt_dlfr:llfr", "emt_dlfr:hlfr",
            "lf_lstm:dnn"} <= set(VARIANTS)


@pytest.mark.parametrize("name", VARIANTS)
def test_a_variant_s_settings_are_its_defaults_and_in_every_recipe(name):
    entry, method = get_entry(name), get_entry(name.partition(":")[0])
    settings = {f.name: getattr(entry.config(), f.name) for f in dataclasses.fields(entry.config)}
    changed = {k: v for k, v in settings.items() if v != getattr(method.config(), k)}
    assert changed and entry.about and entry.cls is method.cls
    assert set(entry.recipes) == set(method.recipes)
    for key, recipe in entry.recipes.items():
        assert isinstance(recipe.model, entry.config) and recipe.train == method.recipes[key].train
        assert all(getattr(recipe.model, k) == v for k, v in changed.items())
    assert all(getattr(make_config(name, layers=1) if "layers" in settings else entry.config(), k) == v
               for k, v in changed.items())  # overrides start from the variant


@pytest.mark.parametrize("name", VARIANTS)
def test_every_variant_trains_every_parameter_it_has(name):
    model = build(name).train()
    losses = model.loss(make_batch(SPEC, 7))
    losses.total.backward()
    without = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not without, f"parameters without gradient: {without}"
    with torch.no_grad():
        assert torch.isfinite(model.eval()(make_batch(SPEC, 3)).prediction).all()


def test_unknown_variants_and_settings_are_clear_errors():
    with pytest.raises(ValueError, match="model 'dmd' has no variant 'dmd:nope'; its variants: dmd:no_hetero_gd"):
        get_entry("dmd:nope")
    with pytest.raises(ValueError, match=r"variant dmd:x sets \['not_a_field'\]"):
        _variant_entry(get_entry("dmd"), "x", Variant("x", {"not_a_field": 1}))


def test_a_variant_checkpoint_loads_as_its_method_with_its_settings(tmp_path):
    model = build("dmd:none").eval()
    restored = load_model(save_checkpoint(tmp_path / "m.pt", model, metrics={}))
    assert restored.model_name == "dmd" and not restored.config.feature_decoupling
    batch = make_batch(SPEC, 4)
    torch.testing.assert_close(restored(batch).prediction, model(batch).prediction, rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------------------------------
# DMD
# ---------------------------------------------------------------------------------------------------------------------


def test_dmd_without_hetero_gd_loses_exactly_that_unit_and_its_weighted_loss():
    full = build("dmd").eval()
    ablated, dropped = twin(full, "dmd:no_hetero_gd")
    assert dropped and all(k.startswith("aux.hetero_gd.") for k in dropped)
    batch = make_batch(SPEC, 6)
    a, b = full.loss(batch), ablated.loss(batch)
    c = full.config
    removed = c.lambda2 * (c.gd_logit_weight * a.terms["hetero_logit"] + c.gd_repr_weight * a.terms["hetero_repr"]
                           + c.gd_reg_weight * a.terms["hetero_reg"])
    torch.testing.assert_close(a.total - b.total, removed, rtol=1e-5, atol=1e-6)
    assert not any(k.startswith("hetero_") for k in b.terms) and {"homo_logit", "margin"} <= set(b.terms)
    torch.testing.assert_close(a.prediction, b.prediction)  # the unit is training-only


def test_dmd_without_homo_gd_loses_that_unit():
    full = build("dmd").eval()
    ablated, dropped = twin(full, "dmd", homo_gd=False)
    assert dropped and all(k.startswith("aux.homo_gd.") for k in dropped)
    assert not any(k.startswith("homo_") for k in ablated.loss(make_batch(SPEC, 5)).terms)


def test_dmd_without_crossmodal_attention_reads_its_own_specific_features():
    full = build("dmd").eval()
    model = build("dmd:no_ca").eval()
    assert len(model.crossmodal) == 0 and len(full.crossmodal) == 6
    d = model.config.dim
    assert model.memory["text"].layers[0].norm.normalized_shape == (d,)  # width d, not (M-1) d
    batch = make_batch(SPEC, 4)
    state = model.encode(batch)
    assert all(h.shape == (4, d) for h in state.h.values())


def test_dmd_none_has_no_decoupling_no_distillation_and_only_the_task_loss():
    full = build("dmd").eval()
    model = build("dmd:none")
    assert not hasattr(model, "specific") and not hasattr(model, "common")
    assert set(model.aux) == {"homo_head", "common_head", "hetero_head", "hetero_out"}
    assert set(model.loss(make_batch(SPEC, 5)).terms) == {"task"}
    fewer = sum(p.numel() for p in full.parameters()) - sum(p.numel() for p in model.parameters())
    assert fewer > 0
    batch = make_batch(SPEC, 4)
    state = model.eval().encode(batch)
    assert all(state.s[m] is state.x_tilde[m] and state.c[m] is state.x_tilde[m] for m in state.s)


# ---------------------------------------------------------------------------------------------------------------------
# MulT + GD
# ---------------------------------------------------------------------------------------------------------------------


def test_mult_gd_predicts_as_mult_and_adds_the_unimodal_and_distillation_losses():
    plain = build("mult").eval()
    gd, _ = twin(plain, "mult:gd")
    batch = make_batch(SPEC, 6)
    torch.testing.assert_close(gd(batch).prediction, plain(batch).prediction, rtol=0, atol=0)
    losses = gd.loss(batch)
    c = gd.config
    expected = (losses.terms["task"] + losses.terms["unimodal"]
                + c.gd_weight * (losses.terms["gd_logit"] + c.gd_repr_weight * losses.terms["gd_repr"]
                                 + c.gd_reg_weight * losses.terms["gd_reg"]))
    torch.testing.assert_close(losses.total.detach(), expected)
    torch.testing.assert_close(losses.terms["task"], plain.loss(batch).terms["task"])
    assert losses.terms["gd_logit"] > 0 and set(plain.loss(batch).terms) == {"task"}


# ---------------------------------------------------------------------------------------------------------------------
# EMT-DLFR
# ---------------------------------------------------------------------------------------------------------------------

LONG = dataclasses.replace(SPEC, lengths={"text": 6, "audio": 24, "vision": 30})


def test_fusion_strategies_share_weights_and_cost_oagl_lt_ooll_lt_oall():
    torch.manual_seed(0)
    models = {s: create_model(f"emt_dlfr:{s}" if s != "oagl" else "emt_dlfr", LONG, **TINY["emt_dlfr"]).eval()
              for s in ("oagl", "ooll", "oall")}
    for model in models.values():
        model.load_state_dict(models["oagl"].state_dict())
    batch = make_batch(LONG, 2)
    macs = {s: count_flops(m, batch) // 2 for s, m in models.items()}
    assert macs["oagl"] < macs["ooll"] < macs["oall"], macs
    counts = {sum(p.numel() for p in m.parameters()) for m in models.values()}
    assert len(counts) == 1
    with torch.no_grad():
        out = {s: m(batch).prediction for s, m in models.items()}
    assert (out["oagl"] - out["ooll"]).abs().max() > 1e-4 and (out["ooll"] - out["oall"]).abs().max() > 1e-4


@pytest.mark.parametrize(
    ("name", "kept_terms"),
    [
        ("emt_dlfr:no_restoration", set()),
        ("emt_dlfr:llfr", {"reconstruction"}),
        ("emt_dlfr:hlfr", {"attraction", "task_complete"}),
    ],
)
def test_restoration_ablation_removes_exactly_its_terms(name, kept_terms):
    full = build("emt_dlfr").eval()
    ablated, dropped = twin(full, name)
    batch = make_batch(SPEC, 6)
    _, kept = drop_features(batch, 0.4, generator=torch.Generator().manual_seed(1), spec=SPEC)
    a, b = full.loss_given_missing(batch, kept), ablated.loss_given_missing(batch, kept)
    heads = {k.split(".")[1] for k in dropped}
    expect_heads = ({"reconstruct"} if "reconstruction" not in kept_terms else set()) | (
        {"projector", "predictor"} if "attraction" not in kept_terms else set())
    assert heads == expect_heads
    groups = {"reconstruction": full.config.reconstruction_weight * a.terms["reconstruction"],
              "attraction": full.config.attraction_weight * (a.terms["attraction"] + a.terms["task_complete"])}
    removed = sum(v for k, v in groups.items() if k not in kept_terms)
    torch.testing.assert_close(a.total - b.total, removed, rtol=1e-5, atol=1e-6)
    per_part = {k for k in b.terms if k.startswith(("attraction_", "reconstruction_"))}
    assert set(b.terms) - per_part == {"task_incomplete"} | kept_terms


def test_models_command_lists_the_variants(capsys):
    import json

    from affectfuse.cli import main

    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows["dmd"]["variants"]["dmd:none"].startswith("Table 3") and "emt_dlfr:oall" in rows["emt_dlfr"]["variants"]
