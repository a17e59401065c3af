"""Draws docs/dataflow.png, the README's picture of what affectfuse does: data in, one model contract, one trainer,
and what comes out. Run `python docs/dataflow.py docs/dataflow.png` after changing the boxes below."""

from __future__ import annotations

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyBboxPatch  # noqa: E402

# (x, y) centre, label, colour; the figure spans 17.3 x 6.2 units
BOXES = {
    "clips": ((1.6, 5.2), "your clips\n.mp4 .avi .wav\n(affectfuse extract)", "#fde4c8"),
    "files": ((1.6, 3.1), "dataset files\nMMSA / MulT / LMF .pkl,\nCMU-SDK .csd, HDF5", "#fde4c8"),
    "synthetic": ((1.6, 1.0), "built-in\nsynthetic corpus", "#fde4c8"),
    "corpus": ((5.1, 3.1), "Corpus\ntrain / valid / test Splits\n(NaN label = unlabelled)", "#d7e8fb"),
    "batch": ((5.1, 1.0), "Batch: features and\nmasks per modality\n(a Split is a torch Dataset)", "#d7e8fb"),
    "model": ((8.6, 3.1), "a model: TFN, LMF, MulT,\nSFT, DMD, EMT-DLFR\nforward(batch), loss(batch)", "#dff2d8"),
    "fit": ((8.6, 1.0), "fit: the one trainer,\nearly stopping on validation,\nbest epoch kept", "#dff2d8"),
    "profile": ((12.2, 5.2), "profile: parameters,\nFLOPs, latency, memory", "#eee0f6"),
    "checkpoint": ((12.2, 1.0), "best.pt, save_pretrained\n(JSON + safetensors),\nTorchScript export", "#eee0f6"),
    "evaluate": ((15.7, 3.1), "evaluate: the papers'\nmetrics; predict:\na score per clip", "#eee0f6"),
    "sweep": ((15.7, 1.0), "sweep: features\nmissing, metrics per\nrate and AUILC", "#eee0f6"),
}
ARROWS = [
    ("clips", "corpus"), ("files", "corpus"), ("synthetic", "corpus"), ("corpus", "batch"), ("batch", "model"),
    ("model", "fit"), ("fit", "checkpoint"), ("checkpoint", "evaluate"), ("checkpoint", "sweep"), ("model", "profile"),
]
WIDTH, HEIGHT = 2.9, 1.4


def draw(path: str) -> None:
    figure, axes = plt.subplots(figsize=(17.3, 6.2))
    axes.set_xlim(0, 17.3)
    axes.set_ylim(0, 6.2)
    axes.axis("off")
    for (x, y), label, colour in BOXES.values():
        axes.add_patch(FancyBboxPatch((x - WIDTH / 2, y - HEIGHT / 2), WIDTH, HEIGHT, boxstyle="round,pad=0.05",
                                      facecolor=colour, edgecolor="#444444", linewidth=1.2))
        axes.text(x, y, label, ha="center", va="center", fontsize=10.5)
    for start, end in ARROWS:
        (x0, y0), (x1, y1) = BOXES[start][0], BOXES[end][0]
        # from edge to edge: the fraction of the centre-to-centre segment that lies inside a box
        inside = min((WIDTH / 2 + 0.12) / abs(x1 - x0) if x1 != x0 else 1.0,
                     (HEIGHT / 2 + 0.12) / abs(y1 - y0) if y1 != y0 else 1.0)
        axes.annotate("", xy=(x1 - inside * (x1 - x0), y1 - inside * (y1 - y0)),
                      xytext=(x0 + inside * (x1 - x0), y0 + inside * (y1 - y0)),
                      arrowprops={"arrowstyle": "-|>", "color": "#555555", "lw": 1.5, "mutation_scale": 16})
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


if __name__ == "__main__":
    draw(sys.argv[1] if len(sys.argv) > 1 else "docs/dataflow.png")
