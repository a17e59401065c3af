"""Write the stand-in "unseen" corpora of docs/unseen_data.md from POM's MFN release (audio + video, no text).

No small public affect corpus with released features (MOUD, ICT-MMMO, YouTube) could be fetched here, so these are
re-labelled views of real POM features, each in a format and label type a user might bring, with labels nobody tuned
a recipe for (the recipes' POM settings were chosen on the 17-trait regression):

- ``unseen-rated/``: MFN HDF5 folder, one column rated 1..5 (POM column 11, one of its 1..5 personality items,
  clipped to [1, 5]); read as a rating around 3.
- ``unseen-3class/``: MFN HDF5 folder, one-hot (N, 3) labels: tertiles of POM column 1 (cut points from train).
- ``unseen-binary.pkl``: MulT pickle with audio and vision only (no text key), labels (N, 1, 1) of 0/1: POM column 0
  above its train median.

The columns were fixed before any model was trained on them. Usage:

    python benchmarks/unseen_corpora.py /work/shared/data/pom OUT_FOLDER
"""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import h5py
import numpy as np

SPLITS = ("train", "valid", "test")


def read(pom: Path, name: str, split: str) -> np.ndarray:
    with h5py.File(pom / f"{name}_{split}.h5", "r") as f:
        return f["d1"][()]


def write_h5(path: Path, values: np.ndarray) -> None:
    with h5py.File(path, "w") as f:
        f.create_dataset("d1", data=values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pom", type=Path, help="POM's MFN folder (audio_/video_/y_{split}.h5)")
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    if not (args.pom / "y_train.h5").is_file():
        parser.error(f"{args.pom} is not POM's MFN folder (no y_train.h5 there)")
    features = {s: {m: read(args.pom, m, s) for m in ("audio", "video")} for s in SPLITS}
    labels = {s: read(args.pom, "y", s) for s in SPLITS}
    rated, classes = args.out / "unseen-rated", args.out / "unseen-3class"
    for folder in (rated, classes):
        folder.mkdir(parents=True, exist_ok=True)
    cuts = np.quantile(labels["train"][:, 1], [1 / 3, 2 / 3])
    median = np.median(labels["train"][:, 0])
    binary = {}
    for s in SPLITS:
        for folder in (rated, classes):
            for m, x in features[s].items():
                write_h5(folder / f"{m}_{s}.h5", x)
        write_h5(rated / f"y_{s}.h5", np.clip(labels[s][:, 11:12], 1, 5))
        write_h5(classes / f"y_{s}.h5", np.eye(3)[np.searchsorted(cuts, labels[s][:, 1], side="right")])
        binary[s] = {"audio": features[s]["audio"], "vision": features[s]["video"],
                     "labels": (labels[s][:, 0] > median).astype(np.float32)[:, None, None]}
    with open(args.out / "unseen-binary.pkl", "wb") as f:
        pickle.dump(binary, f)
    print(f"wrote {rated}, {classes} and {args.out / 'unseen-binary.pkl'}")


if __name__ == "__main__":
    main()
