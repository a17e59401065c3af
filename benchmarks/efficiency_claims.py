"""The papers' efficiency claims, re-measured with affectfuse's profiler (`affectfuse.profile`) on one machine.

    python benchmarks/efficiency_claims.py lmf-tfn      # LMF vs TFN: parameters, train / test throughput (~11x params)
    python benchmarks/efficiency_claims.py sft          # SFT with sparse pooling vs pooling disabled ("up to 6x")
    python benchmarks/efficiency_claims.py emt-mult     # EMT vs MulT at MOSEI shapes + scaling 50 -> 1600 (plot)
    python benchmarks/efficiency_claims.py dmd          # DMD: training (distillation) vs inference cost
    python benchmarks/efficiency_claims.py all

Each writes `benchmarks/results/<claim>_<device>.json` (the scaling plot also `emt_mult_scaling.png`, which needs the
`plot` extra) and prints a Markdown table; `benchmarks/RESULTS.md` quotes them. Inputs are random full-length
features (every step real), each model with its recipe for the corpus; timings are medians of warmed-up repeats;
memory is measured as the profiler's help says (CPU: peak anonymous RSS of a child process; CUDA:
max_memory_allocated).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from pathlib import Path
from typing import Any

from affectfuse.config import Modalities
from affectfuse.efficiency.counting import count_training_flops
from affectfuse.efficiency.profile import Profile, format_profiles, machine_description, profile_model
from affectfuse.efficiency.shapes import SHAPES, Shape
from affectfuse.efficiency.timing import build_runner, median_seconds
from affectfuse.io import write_json
from affectfuse.models.base import FusionModel

RESULTS = Path(__file__).resolve().parent / "results"


def save(name: str, device: str, payload: dict[str, Any]) -> None:
    payload = {"machine": machine_description(device), **payload}
    path = write_json(RESULTS / f"{name}_{device.split(':')[0]}.json", payload)
    print(f"\nwrote {path}")


def rows(profiles: list[Profile]) -> list[dict[str, Any]]:
    return [p.row() for p in profiles]


# ---------------------------------------------------------------------------------------------------------------------
# LMF vs TFN
# ---------------------------------------------------------------------------------------------------------------------

# The LMF paper's CMU-MOSI inputs: GloVe word vectors (300-d, up to 20 words here) for the text LSTM, COVAREP (74-d)
# and Facet (47-d) averaged over the utterance. Subnetworks at the TFN paper's sizes (z_l 128, z_a = z_v = 32); TFN's
# inference network FC(128); LMF rank 4 (the paper's efficiency comparison does not state its rank; 4 is its grid's
# second value and MMSA's MOSEI setting).
LMF_PAPER_SHAPE = Shape(
    "lmf-paper mosi", {"text": 300, "audio": 74, "vision": 47}, {"text": 20, "audio": 1, "vision": 1}, "mosi"
)
SUBNETS = {"hidden": Modalities(text=128, audio=32, vision=32), "text_out": 128}


def lmf_tfn(device: str, batch: int, repeats: int) -> None:
    profiles = [
        profile_model(
            "tfn",
            LMF_PAPER_SHAPE,
            batch_size=batch,
            device=device,
            repeats=repeats,
            overrides=SUBNETS | {"post_fusion_dim": 128},
        ),
        profile_model(
            "lmf", LMF_PAPER_SHAPE, batch_size=batch, device=device, repeats=repeats, overrides=SUBNETS | {"rank": 4}
        ),
    ]
    tfn, lmf = profiles
    ratios = {
        "params_tfn_over_lmf": tfn.params_total / lmf.params_total,
        "train_throughput_lmf_over_tfn": lmf.train_samples_per_s / tfn.train_samples_per_s,
        "test_throughput_lmf_over_tfn": lmf.forward_samples_per_s / tfn.forward_samples_per_s,
        "macs_tfn_over_lmf": tfn.macs / lmf.macs,
    }
    paper = {
        "params_tfn_over_lmf": 12.5 / 1.1,
        "train_throughput_lmf_over_tfn": 1134.82 / 340.74,
        "test_throughput_lmf_over_tfn": 2249.90 / 1177.17,
    }
    print(format_profiles(profiles))
    print("\n| ratio | ours | LMF paper |\n| --- | ---: | ---: |")
    for key, value in ratios.items():
        print(f"| {key} | {value:.1f}x | {paper[key]:.1f}x |" if key in paper else f"| {key} | {value:.1f}x | — |")
    save(
        "lmf_tfn",
        device,
        {"shape": dataclasses.asdict(LMF_PAPER_SHAPE), "profiles": rows(profiles), "ratios": ratios, "paper": paper},
    )


# ---------------------------------------------------------------------------------------------------------------------
# SFT: sparse pooling on / off
# ---------------------------------------------------------------------------------------------------------------------


def sft(device: str, batch: int, repeats: int) -> None:
    shape = SHAPES["mosei"]
    pooled = profile_model("sft", shape, batch_size=batch, device=device, repeats=repeats)
    dense = profile_model(
        "sft",
        shape,
        batch_size=batch,
        device=device,
        repeats=repeats,
        overrides={"pool_kernel": Modalities(text=1, audio=1, vision=1)},
    )
    dense.model = "sft, pooling disabled (k = 1)"
    ratios = {
        "flops": dense.flops / pooled.flops,
        "train_flops": dense.train_flops / pooled.train_flops,
        "forward_time": dense.forward_ms / pooled.forward_ms,
        "train_step_time": dense.train_step_ms / pooled.train_step_ms,
    }
    if pooled.forward_peak_mb and dense.forward_peak_mb:
        ratios |= {
            "forward_memory": dense.forward_peak_mb / pooled.forward_peak_mb,
            "train_memory": dense.train_peak_mb / pooled.train_peak_mb,
        }
    print(format_profiles([pooled, dense]))
    print("\n| disabled / pooled | ratio |\n| --- | ---: |")
    for key, value in ratios.items():
        print(f"| {key} | {value:.2f}x |")
    save(
        "sft_pooling",
        device,
        {
            "shape": "mosei",
            "profiles": rows([pooled, dense]),
            "ratios": ratios,
            "paper": "up to 6x lower compute and memory",
        },
    )


# ---------------------------------------------------------------------------------------------------------------------
# EMT vs MulT
# ---------------------------------------------------------------------------------------------------------------------

SCALING_LENGTHS = (50, 100, 200, 400, 800, 1600)


def emt_mult(device: str, batch: int, repeats: int) -> None:
    at_mosei = [
        profile_model(n, "mosei", batch_size=batch, device=device, repeats=repeats) for n in ("mult", "emt_dlfr")
    ]
    print(format_profiles(at_mosei))
    mult, emt = at_mosei
    per_sample = {p.model: p.macs / p.batch / 1e9 for p in at_mosei}
    print(
        f"\nGMACs per sample: MulT {per_sample['mult']:.2f}, EMT-DLFR {per_sample['emt_dlfr']:.2f} (paper: 3.1 vs 1.5)"
    )
    # Scaling: every modality T steps long, batch 1, forward only (FLOPs exact, memory as the profiler measures it).
    scaling: dict[str, list[dict[str, float]]] = {"mult": [], "emt_dlfr": []}
    for length in SCALING_LENGTHS:
        shape = Shape(
            f"{length},{length},{length}",
            SHAPES["mosei"].dims,
            {"text": length, "audio": length, "vision": length},
            "mosei",
        )
        for name in scaling:
            p = profile_model(name, shape, batch_size=2, device=device, repeats=1, warmup=0)
            scaling[name].append(
                {
                    "length": length,
                    "gmacs_per_sample": p.macs / 2 / 1e9,
                    "forward_peak_mb": p.forward_peak_mb,
                    "train_peak_mb": p.train_peak_mb,
                    "train_step_ms": p.train_step_ms,
                }
            )
            print(
                f"T = {length:5d} {name:9s} {p.macs / 2 / 1e9:8.3f} GMACs/sample, "
                f"forward peak {p.forward_peak_mb:.0f} MB, train peak {p.train_peak_mb:.0f} MB",
                flush=True,
            )
    exponents = {
        name: math.log2(points[-1]["gmacs_per_sample"] / points[-2]["gmacs_per_sample"])
        for name, points in scaling.items()
    }
    print(f"growth exponent of MACs from T = 800 to 1600: {exponents}")
    plot_scaling(scaling, device)
    save(
        "emt_mult",
        device,
        {
            "mosei": rows(at_mosei),
            "gmacs_per_sample": per_sample,
            "ratios_mult_over_emt": {
                "macs": mult.macs / emt.macs,
                "forward_memory": (mult.forward_peak_mb or math.nan) / (emt.forward_peak_mb or math.nan),
                "train_memory": (mult.train_peak_mb or math.nan) / (emt.train_peak_mb or math.nan),
                "train_step_time": mult.train_step_ms / emt.train_step_ms,
            },
            "paper": {
                "macs_G": {"mult": 3.1, "emt": 1.5},
                "gpu_memory_GB": {"mult": 17.8, "emt": 10.8},
                "train_time_s": {"mult": 17.1, "emt": 15.4},
            },
            "scaling": scaling,
            "scaling_exponent_800_1600": exponents,
        },
    )


def plot_scaling(scaling: dict[str, list[dict[str, float]]], device: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install 'affectfuse[plot]'): no plot")
        return
    from affectfuse.io import atomic_write

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    labels = {"mult": "MulT (local-local cross-modal)", "emt_dlfr": "EMT (global-local)"}
    for name, points in scaling.items():
        lengths = [p["length"] for p in points]
        axes[0].plot(lengths, [p["gmacs_per_sample"] for p in points], "o-", label=labels[name])
        axes[1].plot(lengths, [p["train_peak_mb"] for p in points], "o-", label=labels[name])
    for ax, title in zip(
        axes, ("GMACs per sample, one forward", f"peak memory of a training step, batch 2 (MB, {device})"), strict=True
    ):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length T of every modality")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path = RESULTS / "emt_mult_scaling.png"
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    print(f"wrote {path}")


# ---------------------------------------------------------------------------------------------------------------------
# DMD: distillation cost
# ---------------------------------------------------------------------------------------------------------------------


def dmd(device: str, batch: int, repeats: int) -> None:
    profile = profile_model("dmd", "mosei", batch_size=batch, device=device, repeats=repeats)
    print(format_profiles([profile]))
    # The same network trained on its task loss alone (FusionModel.loss: forward + L1), i.e. without the decoupling,
    # reconstruction and graph-distillation terms: what the distillation adds to a training step.
    runner = build_runner("dmd", SHAPES["mosei"], batch, device=device)
    task_only = runner.model.loss
    full_flops = count_training_flops(runner.model, runner.batch)
    runner.model.loss = lambda b: FusionModel.loss(runner.model, b)  # type: ignore[method-assign]
    task_flops = count_training_flops(runner.model, runner.batch)
    task_ms = median_seconds(runner.train_step, repeats=repeats, warmup=1, device=runner.device) * 1e3
    runner.model.loss = task_only  # type: ignore[method-assign]
    full_ms = median_seconds(runner.train_step, repeats=repeats, warmup=1, device=runner.device) * 1e3
    ratios = {
        "train_step_over_forward_time": profile.train_step_ms / profile.forward_ms,
        "train_flops_over_forward_flops": profile.train_flops / profile.flops,
        "full_loss_over_task_only_train_flops": full_flops / task_flops,
        "full_loss_over_task_only_train_time": full_ms / task_ms,
        "training_only_param_share": profile.params_training_only / profile.params_total,
    }
    print("\n| DMD | value |\n| --- | ---: |")
    for key, value in ratios.items():
        print(f"| {key} | {value:.2f} |")
    save(
        "dmd",
        device,
        {
            "shape": "mosei",
            "profile": profile.row(),
            "task_only_train_flops": task_flops,
            "full_train_flops": full_flops,
            "task_only_train_ms": task_ms,
            "full_train_ms": full_ms,
            "ratios": ratios,
        },
    )


CLAIMS = {"lmf-tfn": lmf_tfn, "sft": sft, "emt-mult": emt_mult, "dmd": dmd}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("claim", choices=[*CLAIMS, "all"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=8, help="batch size (LMF vs TFN uses 32)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(machine_description(args.device))
    for name, run in CLAIMS.items():
        if args.claim in (name, "all"):
            print(f"\n## {name}\n")
            batch = max(args.batch, 32) if name == "lmf-tfn" else args.batch
            run(args.device, batch, args.repeats)


if __name__ == "__main__":
    main()
