"""The built-in synthetic multimodal sentiment corpus: deterministic by seed, MOSI-shaped, fusion-dependent.

It is the default data of the demo job and of the tests, so its label must really need all three modalities and
their interaction: a model that sees one modality, or adds the modalities up linearly, is clearly worse than a
multiplicative-fusion model (TFN, LMF).

Generative story (every draw comes from `numpy.random.Generator`s seeded by `SyntheticConfig.seed`)
--------------------------------------------------------------------------------------------------
World, fixed by the seed and shared by all splits: for each modality m, a unit signal direction u_m and
`NUISANCE_FACTORS` unit nuisance directions (rows of a random (1 + r, D_m) matrix) and a constant offset b_m, so
that features are not zero-mean and zero padding is distinguishable from data.

Per sample i:

1. Latent factors z_text, z_audio, z_vision ~ N(0, 1), independent; and r nuisance factors per modality
   ("speaker style") ~ N(0, 1) that never reach the label.
2. Sentiment: y = sum_m LINEAR[m] * z_m + sum_{(m, n)} INTERACTIONS[(m, n)] * z_m * z_n, clipped to [-3, 3];
   with the weights below, y = 0.7 z_text + 0.4 z_audio + z_vision * (0.9 z_audio + 0.5 z_text). Given one modality
   only, every product term has conditional mean 0, so the interaction part (over half of the variance) is
   unpredictable from any single modality, and a linear combination of all three misses it as well.
3. Like MOSI's rater averages, the label is quantised to the mean of R integer ratings: y rounded to a multiple of
   1/R with R drawn per sample from `RATER_COUNTS`. Exact zeros (about 15%) and exact halves (0.5, 1.5, 2.5: ties
   for banker's rounding in the metrics) therefore occur, as do thirds and fifths.
4. A duration fraction f ~ U(min_fraction, 1) gives each modality's true length L_m = max(1, round(f * T_m)) (the
   same for all modalities when aligned); steps >= L_m are padding (mask False, features exactly 0). The length
   carries no information about the label.
5. Each modality's sequence carries its factor in a few salient steps only (each real step is salient with
   probability `SALIENT_FRACTION`, at least one per sample): step t holds
   x_t = e_t * z_m * u_m + V_m nuisance + b_m + noise * eps_t, with eps_t ~ N(0, I) and the envelope
   e_t = L_m / (number of salient steps) on salient steps and 0 elsewhere. The mean over the *real* steps thus
   holds exactly z_m * u_m plus the constant terms and averaged noise, whatever the length; a mean that counts
   padding scales everything by L_m / T_m. Pooling must use the mask; padding must not matter.
6. With `missing_modality = p`, round(p * N) samples of each split, chosen at random, lose one whole modality
   (chosen uniformly): its mask is all False and its features are 0. Their labels are unchanged. These draws come
   last, so the rest of the corpus is identical to the one with p = 0.

Each split draws from its own stream, so changing one split's size does not change the other splits.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from ..config import MODALITIES, Modalities, replace_nested
from .corpus import Corpus, Split, spec_from_splits

LINEAR: dict[str, float] = {"text": 0.7, "audio": 0.4}
"""Main effects: text leads, as in real data, yet explains under a third of the label's variance alone."""
INTERACTIONS: dict[tuple[str, str], float] = {("audio", "vision"): 0.9, ("text", "vision"): 0.5}
"""Product terms, together over half of the variance. Vision has no main effect: it modulates (even flips, as
sarcasm does) what tone and words mean. Every term is odd under z_text, z_audio -> -z_text, -z_audio, so the
label's distribution is symmetric about 0 and half the non-zero labels are positive."""
NUISANCE_FACTORS = 3
"""Per-sample, per-modality factors that shape the features but never the label."""
SALIENT_FRACTION = 0.3
"""Probability that a real step carries its modality's sentiment factor."""
RATER_COUNTS: tuple[int, ...] = (2, 3, 5)
"""Possible numbers of raters whose integer ratings are averaged into a label."""


@dataclass(frozen=True, kw_only=True)
class SyntheticConfig:
    """How large, how long, how noisy the synthetic corpus is; the same config and seed give identical arrays."""

    n_train: int = 1200
    n_valid: int = 300
    n_test: int = 300
    seed: int = 0
    """Fixes the world (projections, offsets) and every sample."""
    aligned: bool = True
    """Word-aligned: every modality has `length` steps and a sample's true length is the same in all of them."""
    length: int = 20
    """Padded length T of every modality when `aligned`."""
    lengths: Modalities[int] = field(default_factory=lambda: Modalities(text=50, audio=375, vision=500))
    """Padded length T_m of each modality when not `aligned` (MOSI unaligned: 50/375/500)."""
    dims: Modalities[int] = field(default_factory=lambda: Modalities(text=32, audio=16, vision=24))
    """Feature dimension D_m of each modality."""
    noise: float = 1.0
    """Standard deviation of the per-step, per-dimension Gaussian noise (the latent factors have unit variance)."""
    min_fraction: float = 0.5
    """True lengths are drawn uniformly between this fraction of the padded length and the padded length."""
    missing_modality: float = 0.0
    """Fraction of each split's samples in which one whole modality, chosen at random, is absent."""

    def __post_init__(self) -> None:
        for name in ("n_train", "n_valid", "n_test", "length"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"SyntheticConfig.{name} must be an integer >= 1, got {value!r}")
        for name in ("lengths", "dims"):
            value = getattr(self, name)
            if not isinstance(value, Modalities) or any(
                not isinstance(v, int) or isinstance(v, bool) or v < 1 for _, v in value.items()
            ):
                raise ValueError(f"SyntheticConfig.{name} must be Modalities of integers >= 1, got {value!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ValueError(f"SyntheticConfig.seed must be an integer >= 0, got {self.seed!r}")
        if not self.noise >= 0:
            raise ValueError(f"SyntheticConfig.noise must be >= 0, got {self.noise!r}")
        if not 0 < self.min_fraction <= 1:
            raise ValueError(f"SyntheticConfig.min_fraction must be in (0, 1], got {self.min_fraction!r}")
        if not 0 <= self.missing_modality <= 1:
            raise ValueError(f"SyntheticConfig.missing_modality must be in [0, 1], got {self.missing_modality!r}")

    @property
    def padded_lengths(self) -> Modalities[int]:
        """T_m of each modality as generated: `length` everywhere when aligned, else `lengths`."""
        if self.aligned:
            return Modalities(text=self.length, audio=self.length, vision=self.length)
        return self.lengths

    @classmethod
    def from_options(cls, options: str) -> SyntheticConfig:
        """Parse `"n_train=500,aligned=false,dims.audio=8"` (empty: defaults); values take the fields' types.

        Raises ValueError naming the valid fields for an unknown key, and the expected type for a bad value.
        """
        overrides: dict[str, object] = {}
        for item in filter(None, (part.strip() for part in options.split(","))):
            key, sep, value = (s.strip() for s in item.partition("="))
            if not sep or not key:
                raise ValueError(f"synthetic option {item!r} is not key=value (options: {options!r})")
            if key in overrides:
                raise ValueError(f"synthetic option {key!r} is given twice (options: {options!r})")
            head, dot, _ = key.partition(".")
            # Modalities' fields are annotated with a TypeVar, which `replace_nested` cannot convert to.
            if dot and head in ("lengths", "dims"):
                try:
                    overrides[key] = int(value)
                except ValueError:
                    raise ValueError(f"cannot set synthetic.{key} to {value!r}: expected int") from None
            else:
                overrides[key] = value
        return replace_nested(cls(), overrides, what="synthetic")

    def to_options(self) -> str:
        """The fields that differ from the defaults, in the syntax `from_options` reads back ("" for defaults)."""
        default = type(self)()
        items = []
        for f in dataclasses.fields(self):
            value, base = getattr(self, f.name), getattr(default, f.name)
            if isinstance(value, Modalities):
                items += [f"{f.name}.{m}={v}" for m, v in value.items() if v != base[m]]
            elif value != base:
                items.append(f"{f.name}={str(value).lower() if isinstance(value, bool) else value}")
        return ",".join(items)


def make_synthetic(config: SyntheticConfig | None = None, **overrides: object) -> Corpus:
    """Generate the corpus described by `config` (defaults if None) with `overrides` applied to it.

    Returns splits train/valid/test with float32 (N, T_m, D_m) features (0 on padding), bool (N, T_m) masks and
    float32 (N, 1) labels in [-3, 3]; the spec is a MOSI-style regression of one target, `sentiment`.
    """
    config = replace_nested(config or SyntheticConfig(), overrides, what="synthetic")
    world_seed, *split_seeds = np.random.SeedSequence(config.seed).spawn(4)
    world = _World.draw(config, np.random.default_rng(world_seed))
    sizes = {"train": config.n_train, "valid": config.n_valid, "test": config.n_test}
    splits = {
        name: _draw_split(config, world, name, n, np.random.default_rng(seed))
        for (name, n), seed in zip(sizes.items(), split_seeds, strict=True)
    }
    spec = spec_from_splits(
        splits,
        task="regression",
        targets=("sentiment",),
        metric_family="mosi",
        aligned=config.aligned,
        extractors={m: "synthetic" for m in MODALITIES},
    )
    interactions = ", ".join(f"{a} x {b}" for a, b in INTERACTIONS)
    notes = [f"synthetic data: the label needs all three modalities and the {interactions} interactions"]
    return Corpus(name="synthetic", splits=splits, spec=spec, source=f"synthetic:{config.to_options()}", notes=notes)


def synthetic_from_options(options: str) -> Corpus:
    """The corpus of the CLI data spec `synthetic:<options>`; see `SyntheticConfig.from_options`."""
    return make_synthetic(SyntheticConfig.from_options(options))


@dataclass(frozen=True)
class _World:
    """What the seed fixes for every split: per modality, a (1 + r, D) projection and a (D,) offset."""

    projections: dict[str, np.ndarray]
    """Row 0 is the sentiment factor's direction, rows 1.. the nuisance factors'; all rows have unit norm."""
    offsets: dict[str, np.ndarray]

    @classmethod
    def draw(cls, config: SyntheticConfig, rng: np.random.Generator) -> _World:
        projections, offsets = {}, {}
        for m, d in config.dims.items():
            p = rng.standard_normal((1 + NUISANCE_FACTORS, d))
            projections[m] = (p / np.linalg.norm(p, axis=1, keepdims=True)).astype(np.float32)
            offsets[m] = (rng.standard_normal(d) / np.sqrt(d)).astype(np.float32)
        return cls(projections=projections, offsets=offsets)


def _draw_split(config: SyntheticConfig, world: _World, name: str, n: int, rng: np.random.Generator) -> Split:
    z = dict(zip(MODALITIES, rng.standard_normal((len(MODALITIES), n)), strict=True))
    y = sum(w * z[m] for m, w in LINEAR.items()) + sum(w * z[a] * z[b] for (a, b), w in INTERACTIONS.items())
    raters = rng.choice(RATER_COUNTS, size=n)
    labels = (np.round(np.clip(y, -3.0, 3.0) * raters) / raters).astype(np.float32)[:, None]
    labels[labels == 0] = 0.0  # round() leaves -0.0 for small negative scores; a label's sign bit must not differ
    fraction = rng.uniform(config.min_fraction, 1.0, size=n)

    features, masks = {}, {}
    for m, t in config.padded_lengths.items():
        true_length = np.maximum(1, np.round(fraction * t)).astype(np.int64)
        real = np.arange(t)[None, :] < true_length[:, None]
        # One uniform per step decides saliency; forcing each sample's smallest real draw salient guarantees >= 1.
        draw = np.where(real, rng.random((n, t)), 2.0)
        salient = (draw < SALIENT_FRACTION) | (draw == draw.min(axis=1, keepdims=True))
        envelope = salient * (true_length / salient.sum(axis=1))[:, None]
        factors = np.concatenate([z[m][:, None], rng.standard_normal((n, NUISANCE_FACTORS))], axis=1)
        per_sample = (factors[:, :, None] * world.projections[m][None]).astype(np.float32)  # (N, 1 + r, D)
        x = rng.standard_normal((n, t, config.dims[m]), dtype=np.float32)
        x *= np.float32(config.noise)
        x += envelope.astype(np.float32)[:, :, None] * per_sample[:, None, 0]
        x += (per_sample[:, 1:].sum(axis=1) + world.offsets[m])[:, None, :]
        x *= real[:, :, None]
        features[m], masks[m] = x, real

    if config.missing_modality > 0:
        dropped = rng.choice(n, size=round(config.missing_modality * n), replace=False)
        which = rng.integers(len(MODALITIES), size=len(dropped))
        for k, m in enumerate(MODALITIES):
            rows = dropped[which == k]
            features[m][rows] = 0.0
            masks[m][rows] = False

    ids = [f"syn{config.seed}_{name}_{i}" for i in range(n)]
    return Split(ids=ids, features=features, masks=masks, labels=labels)
