"""Figures read back from matplotlib: bars start at zero, every model and seed is told apart and named in a legend,
the spread is drawn; `affectfuse plot RUN_DIR` turns log.jsonl files and sweep results into PNGs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

from matplotlib.colors import to_hex  # noqa: E402

from affectfuse import plots  # noqa: E402
from affectfuse.cli import main  # noqa: E402

ROWS = {  # values far from zero and close together: the old plot zoomed in without saying so
    "lmf": {"acc2": (0.80, 0.01), "mae": (0.70, 0.02)},
    "tfn": {"acc2": (0.81, 0.02), "mae": (0.69, 0.01)},
}
SEEDS = {"lmf": {1: {"acc2": 0.79, "mae": 0.68}, 2: {"acc2": 0.81, "mae": 0.72}},
         "tfn": {1: {"acc2": 0.83, "mae": 0.70}, 2: {"acc2": 0.79, "mae": 0.68}}}


def _legend_texts(fig) -> list[str]:
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()]


def test_bars_start_at_zero_with_error_bars_seed_markers_and_a_legend():
    fig = plots.draw_bars("syn", ROWS, ["acc2", "mae"], SEEDS)
    acc2, mae = fig.axes[:2]
    for ax in (acc2, mae):
        assert ax.get_ylim()[0] <= 0.0  # full axis: nothing cut
        bars = ax.patches
        assert [b.get_height() for b in bars] == pytest.approx([0.80, 0.81] if ax is acc2 else [0.70, 0.69])
        assert len({to_hex(b.get_facecolor()) for b in bars}) == 2  # one colour per model
    # error bars: one vertical segment per bar, as long as twice the std
    (errors,) = [c for c in acc2.containers if type(c).__name__ == "ErrorbarContainer"]
    segments = errors.lines[2][0].get_segments()
    assert [s[1][1] - s[0][1] for s in segments] == pytest.approx([0.02, 0.04])
    # every seed's own value, with a marker per seed (2 models x 2 seeds)
    dots = [line for line in acc2.lines if line.get_marker() in plots.MARKERS]  # not the error bars' caps
    assert sorted(line.get_ydata()[0] for line in dots) == pytest.approx([0.79, 0.79, 0.81, 0.83])
    assert len({line.get_marker() for line in dots}) == 2
    assert _legend_texts(fig) == ["lmf", "tfn", "seed 1", "seed 2"]


def test_negative_means_keep_zero_in_view():
    fig = plots.draw_bars("syn", {"a": {"corr": (-0.2, 0.05)}, "b": {"corr": (0.1, 0.05)}}, ["corr"])
    low, high = fig.axes[0].get_ylim()
    assert low < -0.2 and high > 0.1


def test_training_curves_tell_seeds_apart_and_ring_the_selected_epoch():
    history = [{"epoch": e, "train": {"total": 1.0 - 0.1 * e}, "valid": {"mae": 0.9 - 0.05 * e + (e == 2) * 0.2}}
               for e in range(4)]
    runs = [{"group": g, "seed": s, "history": history, "best_epoch": 1} for g in ("lmf", "tfn") for s in (1, 2, 3)]
    fig = plots.draw_training_curves("demo", runs)
    loss = fig.axes[0]
    lines = loss.get_lines()
    assert len(lines) == 3 and len({to_hex(line.get_color()) for line in lines}) == 3
    assert len({line.get_marker() for line in lines}) == 3
    rings = fig.axes[1].collections
    assert len(rings) == 3 and rings[0].get_offsets()[0].tolist() == pytest.approx([1, 0.85])
    assert _legend_texts(fig) == ["seed 1", "seed 2", "seed 3", "selected epoch"]
    assert fig.axes[1].get_ylabel() == "valid mae" and "tfn" in fig.axes[2].get_ylabel()


def _write_run(folder: Path, seed: int, epochs: int = 3) -> None:
    folder.mkdir(parents=True)
    lines = [json.dumps({"epoch": e, "train": {"total": 1 - e / 10}, "valid": {"mae": 1 - e / 20}, "best": True})
             for e in range(epochs)]
    (folder / "log.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "result.json").write_text(json.dumps({"model": "lmf", "seed": seed, "best_epoch": epochs - 1,
                                                    "train": {"monitor": "auto"}}))


def test_plot_command_draws_training_curves_and_rate_curves(tmp_path, capsys):
    for seed in (1, 2):
        _write_run(tmp_path / "lmf" / f"seed{seed}", seed)
    conditions = [{"name": f"rate{r:.2f}", "rates": {}, "rate": r, "label": f"{r:.2f}"} for r in (0.0, 0.5, 1.0)]
    summary = {"lmf": {c["name"]: {"mae": {"mean": 0.6 + c["rate"] / 4, "std": 0.02}} for c in conditions}}
    (tmp_path / "results.json").write_text(json.dumps({
        "models": ["lmf"], "seeds": [1, 2], "conditions": conditions, "summary": summary,
        "auilc": {"lmf": {"mae": {"auilc": 0.72, "std": 0.01}}}}))
    assert main(["plot", str(tmp_path), "--out", str(tmp_path / "figs")]) == 0
    written = capsys.readouterr().out.split()
    assert written == [str(tmp_path / "figs" / "training_curves.png"), str(tmp_path / "figs" / "rate_curves.png")]
    for path in written:
        assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rate_curves_have_error_bars_and_name_each_models_auilc():
    curves = {m: {"mae": ([0.6, 0.7, 0.8], [0.01, 0.02, 0.03], f"{m} (AUILC {a})")} for m, a in (("lmf", 0.7),
                                                                                                    ("tfn", 0.8))}
    fig = plots.draw_rate_curves("sweep", [0.0, 0.5, 1.0], curves, ["mae"])
    ax = fig.axes[0]
    assert sum(type(c).__name__ == "ErrorbarContainer" for c in ax.containers) == 2
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["lmf (AUILC 0.7)", "tfn (AUILC 0.8)"]


def test_plot_command_on_an_empty_folder_is_one_clear_error(tmp_path, capsys):
    assert main(["plot", str(tmp_path)]) == 1
    assert "nothing to plot" in capsys.readouterr().err
    assert main(["plot", str(tmp_path / "nope")]) == 1
    assert "no such folder" in capsys.readouterr().err
