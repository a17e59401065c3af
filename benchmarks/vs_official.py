"""affectfuse against the official implementations, side by side in one process, same weights and inputs.

    python benchmarks/vs_official.py --lmf PATH/Low-rank-Multimodal-Fusion --tfn PATH/TensorFusionNetworks \\
        --mult PATH/Multimodal-Transformer --sft PATH/sft --dmd PATH/DMD --emt_dlfr PATH/EMT-DLFR --epoch \\
        --out benchmarks/results/vs_official_cpu.json

Any checkout not given is skipped with a message. For each method and shape, the official model is built from its
checkout (the run-time shims of tests/fixtures/parity/make_*.py: fairseq's sparse attention as its dense path for
SFT, a contiguous positions tensor for MulT), its weights are converted into ours with `affectfuse.convert`, and the
two are timed on the same random batch, interleaved repeat by repeat after a warm-up: a training step (zero grad,
forward, the method's task loss, backward, Adam step) and a forward pass in eval mode without gradients. Each side
steps as its trainer does: the official scripts' `torch.optim.Adam` (PyTorch's per-parameter loop on CPU), ours
`engine.train.build_optimizer` + `optimizer_step` (fused Adam). Every dropout is 0.1 on both sides, except DMD and
EMT-DLFR, which run their official MOSI configurations, dropouts included.

DMD and EMT-DLFR take their official trainers' steps, with all their loss terms (see `dmd` and `emt_dlfr`).
EMT-DLFR has one row per text encoder of `--emt-bert` (random weights, fine-tuned as the official MOSI config
does): BERT-base (12 layers, 768 wide, as the official MOSI runs) and a 1-layer BERT 64 wide (the row then shows
mostly the rest: audio/vision LSTMs, the fusion over 375/500 frames, the restoration losses), at MOSI's unaligned
shapes (text 50 tokens, audio 375 x 5, vision 500 x 20), batch 32 only (the official forward squeezes the batch
away at batch 1: its LSTM's final state loses the batch axis).

`--epoch` adds a whole training epoch with data loading for LMF and MulT: a MOSI-sized synthetic corpus written in
the official pickle format, read on the official side by the official `Dataset` class through a `DataLoader`
(batch 32, shuffled, as the official scripts; `num_workers=0`, so no process start-up is counted) and the official
loop body, on ours by `affectfuse.data.formats` into `engine.train.train_epoch`.

Reported: median and min/max wall seconds of each, the ratio official / ours (above 1: we are faster), the machine,
threads and torch version, and each side's training-step peak memory: the anonymous memory one step adds on top of
what the process holds before it (freed heap pages handed back first with `malloc_trim`), so the two models sharing
the process do not count; `affectfuse profile` measures ours alone in a child process.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import importlib
import importlib.util
import io
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from affectfuse import create_model
from affectfuse.config import InputSpec, Modalities, TrainConfig
from affectfuse.convert import load_converted
from affectfuse.data import formats
from affectfuse.data.batch import Batch
from affectfuse.data.corpus import BatchLoader
from affectfuse.efficiency.memory import _peak_anonymous, _read_status, _reset_peak_rss, cpu_memory_supported
from affectfuse.efficiency.profile import machine_description
from affectfuse.engine.train import build_optimizer, optimizer_step, train_epoch
from affectfuse.io import write_json

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "fixtures" / "parity"))
MOSEI = {"text": 300, "audio": 74, "vision": 35}  # GloVe / COVAREP / Facet, as the official repos load MOSEI
METHODS = ("lmf", "tfn", "mult", "sft", "dmd", "emt_dlfr")  # each with a --<name> PATH of its official checkout
MOSI_TRANSCRIPTS = ROOT.parent / "shared" / "data" / "mosi" / "labels" / "mosi_labels_id_text_label_mode.csv"


def mosi_word_counts() -> np.ndarray | None:
    """Words per utterance of CMU-MOSI's 2199 transcripts (median 10, mean 12.6), capped at the aligned length 50;
    None when the shared data is absent."""
    import csv

    if not MOSI_TRANSCRIPTS.is_file():
        return None
    with MOSI_TRANSCRIPTS.open(newline="") as f:
        return np.minimum([len(row["text"].split()) for row in csv.DictReader(f)], 50)


def _batch(lengths: dict[str, int], dims: dict[str, int], b: int, classes: int = 0,
           words: np.ndarray | None = None) -> Batch:
    """A random batch; with `words`, each text sequence has a word count drawn from them and is zero-padded at the
    front to its full length, as the SDK and the official pickles pad (the official models run over the padding;
    ours are given the mask)."""
    g = torch.Generator().manual_seed(0)
    features = {m: torch.randn(b, lengths[m], dims[m], generator=g) for m in dims}
    label = torch.randint(0, classes, (b, 1), generator=g) if classes else torch.rand(b, 1, generator=g) * 6 - 3
    masks = {m: torch.ones(b, t, dtype=torch.bool) for m, t in lengths.items()}
    if words is not None:
        t = lengths["text"]
        counts = torch.as_tensor(np.random.default_rng(0).choice(words, b))
        masks["text"] = torch.arange(t)[None, :] >= (t - counts)[:, None]
        features["text"] = features["text"] * masks["text"][..., None]
    return Batch(features=features, masks=masks, label=label, ids=[str(i) for i in range(b)])


_LIBC = ctypes.CDLL(None)


def _peak_mb(run: Callable[[], None]) -> float:
    """Peak anonymous memory one call adds on top of what the process holds before it (MB): the transient
    activations, gradients and optimiser work of that call (both models stay resident in this one process)."""
    gc.collect()
    _LIBC.malloc_trim(0)  # hand freed heap pages back first, or the call reuses them and seems to need nothing
    before = _read_status("RssAnon")
    _reset_peak_rss()
    run()
    return (_peak_anonymous() - before) / 2**20


def _interleaved(official: Callable[[], None], ours: Callable[[], None], repeats: int) -> dict:
    """Both sides timed in turn `repeats` times after one warm-up each: medians, min-max ranges, official / ours."""
    official(), ours()
    times_a, times_b = [], []
    for _ in range(repeats):
        times_a.append(_timed(official))
        times_b.append(_timed(ours))
    return {
        "official_s": statistics.median(times_a), "ours_s": statistics.median(times_b),
        "official_range": [min(times_a), max(times_a)], "ours_range": [min(times_b), max(times_b)],
        "ratio": statistics.median(times_a) / statistics.median(times_b),
    }


def _timed(run: Callable[[], None]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def compare(name: str, official: nn.Module, ours: nn.Module, official_forward: Callable[[], torch.Tensor],
            ours_batch: Batch, official_loss: Callable[[torch.Tensor], torch.Tensor], repeats: int) -> dict:
    """Interleaved timings of a training step and of an eval forward, both sides; the official step as its
    scripts take it (Adam over all parameters, the task loss)."""
    opt_official = torch.optim.Adam(official.parameters(), lr=1e-4)

    def step_official() -> None:
        official.train()
        opt_official.zero_grad(set_to_none=True)
        official_loss(official_forward()).backward()
        opt_official.step()

    def forward_official() -> None:
        official.eval()
        with torch.no_grad():
            official_forward()

    # BatchNorm cannot train on one sample (the official code neither)
    train_too = len(ours_batch.ids) > 1 or not any(isinstance(m, nn.BatchNorm1d) for m in official.modules())
    return compare_steps(name, step_official if train_too else None, forward_official, ours, ours_batch,
                         TrainConfig(lr=1e-4), repeats)


def compare_steps(name: str, step_official: Callable[[], None] | None, forward_official: Callable[[], None],
                  ours: nn.Module, ours_batch: Batch, train: TrainConfig, repeats: int) -> dict:
    """Interleaved timings (median of `repeats` after a warm-up): the official training step and eval forward given,
    ours through the trainer's optimiser and step."""
    opt_ours = build_optimizer(ours, train)

    def step_ours() -> None:
        ours.train()
        opt_ours.zero_grad(set_to_none=True)
        ours.loss(ours_batch).total.backward()
        optimizer_step(ours, opt_ours, train)

    def forward_ours() -> None:
        ours.eval()
        with torch.no_grad():
            ours(ours_batch)

    row: dict = {"case": name}
    modes = [("train_step", step_official, step_ours), ("forward", forward_official, forward_ours)]
    for what, a, b in modes:
        if a is None:
            continue
        row[what] = _interleaved(a, b, repeats)
        if cpu_memory_supported():
            row[what] |= {"official_peak_mb": _peak_mb(a), "ours_peak_mb": _peak_mb(b)}
    print(f"{name}: " + ", ".join(f"{k} {row[k]['ratio']:.2f}x" for k in ("train_step", "forward") if k in row)
          + " (official / ours)", flush=True)
    return row


def lmf_tfn(which: str, checkout: Path, b: int, repeats: int, words: np.ndarray | None = None) -> dict:
    from make_lmf import official_module

    hidden = {"audio": 16, "video": 16, "text": 128}
    module = official_module(checkout, f"official_{which}")
    dims = (MOSEI["audio"], MOSEI["vision"], MOSEI["text"])
    sizes = (hidden["audio"], hidden["video"], hidden["text"])
    dropouts = (0.1, 0.1, 0.1, 0.1)
    official = module.LMF(dims, sizes, 64, dropouts, 1, 4) if which == "lmf" else module.TFN(dims, sizes, 64, dropouts,
                                                                                              32)
    spec = InputSpec(dims=dict(MOSEI), lengths={"text": 50, "audio": 1, "vision": 1})
    overrides = {"hidden": Modalities(text=128, audio=16, vision=16), "text_out": 64,
                 "dropout": Modalities(text=0.1, audio=0.1, vision=0.1)}
    overrides |= {"rank": 4} if which == "lmf" else {"post_fusion_dim": 32, "post_fusion_dropout": 0.1}
    config = create_model(which, spec, **overrides).config
    ours = load_converted(which, "official", official.state_dict(), config, spec)
    batch = _batch({"text": 50, "audio": 1, "vision": 1}, MOSEI, b, words=words)
    audio, video, text = batch.features["audio"][:, 0], batch.features["vision"][:, 0], batch.features["text"]
    label = batch.label
    text_lengths = "MOSI word counts padded to 50" if words is not None else "every clip 50 words"
    return compare(f"{which} (MOSEI dims, {text_lengths}, batch {b})", official, ours,
                   lambda: official(audio, video, text),
                   batch, lambda out: nn.functional.l1_loss(out.reshape(b, -1), label), repeats)


def _mult_hyperparameters() -> SimpleNamespace:
    return SimpleNamespace(orig_d_l=MOSEI["text"], orig_d_a=MOSEI["audio"], orig_d_v=MOSEI["vision"], vonly=True,
                           aonly=True, lonly=True, num_heads=5, layers=5, attn_dropout=0.1, attn_dropout_a=0.1,
                           attn_dropout_v=0.1, relu_dropout=0.1, res_dropout=0.1, out_dropout=0.1, embed_dropout=0.1,
                           attn_mask=False, output_dim=1)


def _mult_config(spec: InputSpec) -> object:
    drop = Modalities(text=0.1, audio=0.1, vision=0.1)
    return create_model("mult", spec, dim=30, heads=5, layers=5, attn_dropout=drop, self_attn_dropout=0.1,
                        relu_dropout=0.1, res_dropout=0.1, out_dropout=0.1, embed_dropout=0.1,
                        text_dropout=0.1).config


def mult(checkout: Path, lengths: dict[str, int], b: int, repeats: int, label: str) -> dict:
    from make_mult import official_model_class

    official = official_model_class(checkout, width=None)(_mult_hyperparameters())
    spec = InputSpec(dims=dict(MOSEI), lengths=lengths)
    ours = load_converted("mult", "official", official.state_dict(), _mult_config(spec), spec)
    batch = _batch(lengths, MOSEI, b)
    x = batch.features
    return compare(f"mult {label} (batch {b})", official, ours,
                   lambda: official(x["text"], x["audio"], x["vision"])[0], batch,
                   lambda out: nn.functional.l1_loss(out, batch.label), repeats)


def sft(checkout: Path, b: int, repeats: int) -> dict:
    from make_sft import official_modules

    network, tokenizers, wrapper = official_modules(checkout)
    lengths = {"vision": 500, "audio": 500, "text": 50}
    kernels = {"vision": 64, "audio": 64, "text": 50}
    config_ns = SimpleNamespace(mixup="none", alpha_type="permodality", embed_dim=40, dropout=0.1,
                                n_layers_pre_fusion=1, n_layers_post_fusion=11, pool_type="max", n_heads=5,
                                kernel_sz=[64, 64, 50], stride_sz=[64, 64, 50], padding=[0, 0, 0], pool_k=5,
                                fusion_layer_enabled=False, dataset="mosei", n_classes=7, permute_seq=False)
    official = wrapper.FullModelShell(tokenizers.FeatureTokenizer(500, MOSEI["vision"], 40),
                                      tokenizers.FeatureTokenizer(500, MOSEI["audio"], 40),
                                      tokenizers.TextTokenizer(50, MOSEI["text"], 40),
                                      network.SparseFusionTransformer(config_ns))
    spec = InputSpec(dims=dict(MOSEI), lengths=lengths, task="classification", num_classes=7, metric_family="iemocap")
    config = create_model("sft", spec, dropout=0.1, pool_kernel=Modalities(**kernels), pool_windows="floor").config
    ours = load_converted("sft", "official", official.state_dict(), config, spec)
    batch = _batch(lengths, MOSEI, b, classes=7)
    x = batch.features
    return compare(f"sft (MOSEI 50/500/500, batch {b})", official, ours,
                   lambda: official(x["vision"], x["audio"], x["text"]), batch,
                   lambda out: nn.functional.cross_entropy(out, batch.label[:, 0]), repeats)


def dmd(checkout: Path, b: int, repeats: int) -> dict:
    """DMD at the official MOSI configuration (d 50, 10 heads, 4 levels, kernels 5, attention mask on, aligned 50,
    feature text of 768 dims as BERT's output). The official training step is `trains/singleTask/DMD.py`'s `do_train`
    on a one-batch loader, stopped right after its backward (tests/fixtures/parity/make_dmd.py): it includes the
    trainer's set-up and every loss term of both distillation units, not its clipping or optimiser step, which ours
    includes."""
    import make_dmd

    official_ns = make_dmd.load_official(checkout)
    make_dmd.D, make_dmd.HEADS, make_dmd.LEVELS = 50, 10, 4
    make_dmd.DIMS = {"l": 768, "a": 5, "v": 20}
    lengths, kernels = {"l": 50, "a": 50, "v": 50}, {"l": 5, "a": 5, "v": 5}
    models, args = make_dmd.build(official_ns, lengths, kernels, True, make_dmd.MOSI_DROPOUTS)
    names = {"l": "text", "a": "audio", "v": "vision"}
    spec = InputSpec(dims={names[m]: d for m, d in make_dmd.DIMS.items()}, lengths={names[m]: 50 for m in "lav"},
                     aligned=True)
    config = create_model("dmd", spec, dim=50, heads=10, layers=4, kernel=Modalities(text=5, audio=5, vision=5),
                          causal=True).config
    state = {f"{prefix}{k}": v for prefix, module in zip(("", "homo_gd.", "hetero_gd."), models, strict=True)
             for k, v in module.state_dict().items()}
    ours = load_converted("dmd", "official", state, config, spec)
    batch = _batch({"text": 50, "audio": 50, "vision": 50}, dict(spec.dims), b)
    inputs = {m: batch.features[names[m]] for m in "lav"}
    official = models[0]

    def official_step() -> None:
        with contextlib.redirect_stdout(io.StringIO()):
            make_dmd.one_step(official_ns, models, args, inputs, batch.label, train=True)

    def official_forward() -> None:
        official.eval()
        with torch.no_grad():
            official(inputs["l"], inputs["a"], inputs["v"])

    return compare_steps(f"dmd aligned 50 (MOSI config, batch {b})", official_step, official_forward, ours, batch,
                         TrainConfig(lr=1e-4, weight_decay=0.005, grad_clip=0.6), repeats)


EMT_BERTS = {  # the EMT-DLFR rows' text encoders (`transformers.BertConfig` arguments), random weights
    "bert-base": {},  # BertConfig() defaults: 12 layers, 768 wide, 12 heads, vocabulary 30522 (bert-base-uncased's)
    "bert-1layer-64": {"num_hidden_layers": 1, "hidden_size": 64, "num_attention_heads": 2, "intermediate_size": 256},
}
MOSI_UNALIGNED = {"text": 50, "audio": 375, "vision": 500}  # steps of MMSA's MOSI unaligned_50.pkl (spec §0)
MOSI_DIMS = {"audio": 5, "vision": 20}  # the COVAREP / Facet subsets of MMSA's MOSI pickles


class _Stepped(Exception):
    """Raised by the official optimiser right after its step: the end of one official training step."""


def emt_dlfr(checkout: Path, bert: str, b: int, repeats: int, words: np.ndarray | None = None) -> dict:
    """EMT-DLFR at the official MOSI configuration (`ConfigRegression` emt-dlfr / mosi, built by
    tests/fixtures/parity/make_emt_dlfr.py: D 128, 3 layers, 4 heads, shared MPUs, dropouts 0.3 attention, 0.1
    feed-forward, 0.3 before the head and BERT's own 0.1, as the official config; ours the same through
    `load_converted`), text the random BERT `EMT_BERTS[bert]`, fine-tuned (the official `use_finetune`), saved
    where the official `BertTextEncoder` loads it. Data: a MOSI-format unaligned pickle read by the official
    `MMDataLoader` (its static missing masks at rate 0.5), text 50 tokens (when the transcripts are there, each
    clip's real tokens are a MOSI word count, one word piece a word, + [CLS] and [SEP]), audio 375 x 5 and vision
    500 x 20 frames, every clip at full length.

    Official step: the trainer's `do_train` (trains/missingTask/EMT_DLFR.py) on a one-batch loader with
    `update_epochs` 1, stopped right after its optimiser step: set-up (parameter groups, criteria), both views
    forward, every loss term (task of both views, the four attraction terms, the three reconstructions on its static
    masks), backward, Adam over its five parameter groups. The official MOSI config accumulates 4 batches per step
    (`update_epochs` 4, our recipe's `accumulate`); both sides here step on every batch. Its Adam is built once and
    kept (its state persists as in training). Ours: `loss` (a fresh incomplete view drawn at rate 0.5, the same
    terms) + backward + fused Adam over the same five groups. Forward: the official `forward_once` on the complete
    view (one view; the official evaluation loop runs the model on both views) against our `forward`."""
    import make_emt_dlfr as emt
    from transformers import BertConfig

    from affectfuse.models.emt_dlfr import RECIPES, EMTDLFRConfig

    width = BertConfig(**EMT_BERTS[bert]).hidden_size
    tokens = [50] * b if words is None else np.minimum(np.random.default_rng(0).choice(words, b) + 2, 50).tolist()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        emt.write_bert(emt.bert_folder(root), EMT_BERTS[bert])
        emt.write_split_pickle(emt.mosi_pickle(root), tokens, [MOSI_UNALIGNED["audio"]] * b,
                               [MOSI_UNALIGNED["vision"]] * b, steps=tuple(MOSI_UNALIGNED.values()),
                               dims=(MOSI_DIMS["audio"], MOSI_DIMS["vision"]),
                               vocab=BertConfig(**EMT_BERTS[bert]).vocab_size)
        official_ns = emt.load_official(checkout, root)
        args = emt.mosi_args(official_ns, root / "unused.pth", feature_dims=(width, *MOSI_DIMS.values()),
                             text_out=width, batch_size=b, update_epochs=1)
        torch.manual_seed(0)
        data = next(iter(official_ns.MMDataLoader(args)["train"]))
        official = official_ns.AMIO(args)
        spec = InputSpec(dims={"text": 3, **MOSI_DIMS}, lengths=dict(MOSI_UNALIGNED),
                         extractors={"text": "bert-tokens"})
        config = EMTDLFRConfig(bert_path=str(emt.bert_folder(root)))
        ours = load_converted("emt_dlfr", "official", official.state_dict(), config, spec)
    features = {"text": data["text"].transpose(1, 2).contiguous(), "audio": data["audio"], "vision": data["vision"]}
    masks = {"text": data["text"][:, 1] > 0, "audio": data["audio_mask"] > 0, "vision": data["vision_mask"] > 0}
    batch = Batch(features=features, masks=masks, label=data["labels"]["M"].reshape(-1, 1),
                  ids=[str(i) for i in range(b)])

    trainer = official_ns.ATIO().getTrain(args)
    kept: list[torch.optim.Optimizer] = []

    def stop(*_: object) -> None:
        raise _Stepped

    def adam_once(groups: list[dict]) -> torch.optim.Optimizer:
        if not kept:
            kept.append(torch.optim.Adam(groups))
            kept[0].register_step_post_hook(stop)
        return kept[0]

    official_ns.trainer_module.optim = SimpleNamespace(Adam=adam_once)

    def official_step() -> None:
        with emt.trainer_shims(official_ns):
            try:
                trainer.do_train(official, {"train": [data], "valid": [data]})
            except _Stepped:
                return
        raise RuntimeError("the official EMT-DLFR trainer finished its epoch without an optimiser step")

    text_lengths = data["text"][:, 1].sum(1).int() - 2  # as the official forward: without [CLS] and [SEP]

    def official_forward() -> torch.Tensor:
        official.eval()
        with torch.no_grad():
            return official.Model.forward_once(data["text"], text_lengths, data["audio"], data["audio_lengths"],
                                               data["vision"], data["vision_lengths"], missing=False)["pred"]

    with torch.no_grad():  # the same function on both sides (eval mode), before timing
        difference = (official_forward() - ours.eval()(batch).prediction).abs().max().item()
    print(f"emt_dlfr ({bert}, batch {b}): eval predictions differ by {difference:.1e} at most", flush=True)
    text = "MOSI word counts + 2 in 50 tokens" if words is not None else "every clip 50 tokens"
    row = compare_steps(f"emt_dlfr {bert} (MOSI config, unaligned 50/375/500, {text}, batch {b})", official_step,
                        official_forward, ours, batch, RECIPES["mosi"].train, repeats)
    return row | {"max_abs_prediction_difference": difference}


MOSI_TRAIN = 1284  # training clips in CMU-MOSI's standard split


def _timed_pair(name: str, official_epoch: Callable[[], None], our_epoch: Callable[[], None], repeats: int) -> dict:
    row = {"case": name, "epoch": _interleaved(official_epoch, our_epoch, repeats)}
    print(f"{name}: epoch {row['epoch']['ratio']:.2f}x (official / ours)", flush=True)
    return row


def _our_epoch(ours: nn.Module, path: Path, train: TrainConfig) -> Callable[[], None]:
    split = formats.load_corpus(path).split("train")
    optimizer = build_optimizer(ours, train)
    loader = BatchLoader(split, batch_size=train.batch_size, shuffle=True, seed=0)
    return lambda: train_epoch(ours, loader, optimizer, train, torch.device("cpu"))


def lmf_epoch(checkout: Path, folder: Path, repeats: int) -> dict:
    """LMF on a MOSI-sized mosi.pkl: the official `load_mosi` Dataset and `train_mosi.py`'s loop body vs ours."""
    import pickle

    from make_lmf import official_module

    g = np.random.default_rng(0)
    n = {"train": MOSI_TRAIN, "valid": 229, "test": 686}
    data = {s.encode(): {b"covarep": g.standard_normal((k, MOSEI["audio"]), dtype=np.float32),
                         b"facet": g.standard_normal((k, MOSEI["vision"]), dtype=np.float32),
                         b"glove": g.standard_normal((k, 50, MOSEI["text"]), dtype=np.float32),
                         b"label": g.uniform(-3, 3, (k, 1)).astype(np.float32)} for s, k in n.items()}
    (folder / "mosi.pkl").write_bytes(pickle.dumps(data))
    module = official_module(checkout, "official_lmf")
    spec = importlib.util.spec_from_file_location("official_lmf_utils", checkout / "utils.py")
    utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(utils)
    official = module.LMF((MOSEI["audio"], MOSEI["vision"], MOSEI["text"]), (16, 16, 128), 64, (0.1,) * 4, 1, 4)
    with contextlib.redirect_stdout(io.StringIO()):
        train_set = utils.load_mosi(f"{folder}/")[0]
    loader = DataLoader(train_set, batch_size=32, shuffle=True)
    criterion = nn.L1Loss(reduction="sum")  # the script's size_average=False
    optimizer = torch.optim.Adam(official.parameters(), lr=1e-3)

    def official_epoch() -> None:
        official.train()
        for batch in loader:
            official.zero_grad()
            x_a, x_v, x_t = batch[0].float().squeeze(), batch[1].float().squeeze(), batch[2].float()
            loss = criterion(official(x_a, x_v, x_t), batch[-1].view(-1, 1).float())
            loss.backward()
            optimizer.step()

    corpus = formats.load_corpus(folder / "mosi.pkl")
    config = create_model("lmf", corpus.spec, hidden=Modalities(text=128, audio=16, vision=16), text_out=64,
                          rank=4, dropout=Modalities(text=0.1, audio=0.1, vision=0.1)).config
    ours = load_converted("lmf", "official", official.state_dict(), config, corpus.spec)
    return _timed_pair(f"lmf epoch (MOSI-sized, {MOSI_TRAIN} clips, batch 32)", official_epoch,
                       _our_epoch(ours, folder / "mosi.pkl", TrainConfig(lr=1e-3)), repeats)


def mult_epoch(checkout: Path, folder: Path, repeats: int) -> dict:
    """MulT aligned 50 on a MOSI-sized mosei_senti_data.pkl: the official `Multimodal_Datasets` and `src/train.py`'s
    loop body (L1 loss, gradient norm clipped at 0.8) vs ours."""
    import pickle

    from make_mult import official_model_class

    g = np.random.default_rng(0)
    n = {"train": MOSI_TRAIN, "valid": 229, "test": 686}
    data = {s: {"text": g.standard_normal((k, 50, MOSEI["text"]), dtype=np.float32),
                "audio": g.standard_normal((k, 50, MOSEI["audio"]), dtype=np.float32),
                "vision": g.standard_normal((k, 50, MOSEI["vision"]), dtype=np.float32),
                "labels": g.uniform(-3, 3, (k, 1, 1)).astype(np.float32),
                "id": np.array([[f"clip{i}", "0", "0"] for i in range(k)])} for s, k in n.items()}
    (folder / "mosei_senti_data.pkl").write_bytes(pickle.dumps(data))
    cls = official_model_class(checkout, width=None)
    dataset_module = importlib.import_module("src.dataset")
    official = cls(_mult_hyperparameters())
    loader = DataLoader(dataset_module.Multimodal_Datasets(str(folder), "mosei_senti", "train", if_align=True),
                        batch_size=32, shuffle=True)
    criterion = nn.L1Loss()
    optimizer = torch.optim.Adam(official.parameters(), lr=1e-3)

    def official_epoch() -> None:
        official.train()
        for batch_x, batch_y, _meta in loader:
            _, text, audio, vision = batch_x
            official.zero_grad()
            loss = criterion(official(text, audio, vision)[0], batch_y.squeeze(-1))
            loss.backward()
            nn.utils.clip_grad_norm_(official.parameters(), 0.8)
            optimizer.step()

    corpus = formats.load_corpus(folder / "mosei_senti_data.pkl")
    ours = load_converted("mult", "official", official.state_dict(), _mult_config(corpus.spec), corpus.spec)
    return _timed_pair(f"mult aligned 50 epoch (MOSI-sized, {MOSI_TRAIN} clips, batch 32)", official_epoch,
                       _our_epoch(ours, folder / "mosei_senti_data.pkl", TrainConfig(lr=1e-3, grad_clip=0.8)),
                       repeats)


def markdown(rows: list[dict]) -> str:
    """The rows as the table of benchmarks/RESULTS.md: ms median [min-max] per side, ratio official / ours."""

    def cell(row: dict, what: str) -> list[str]:
        if what not in row:
            return ["—"] * (4 if what == "train_step" else 3)
        r = row[what]
        lo, hi = (f"{x * 1e3:.1f}" for x in r["official_range"])
        a = f"{r['official_s'] * 1e3:.1f} [{lo}–{hi}]"
        lo, hi = (f"{x * 1e3:.1f}" for x in r["ours_range"])
        cells = [a, f"{r['ours_s'] * 1e3:.1f} [{lo}–{hi}]", f"**{r['ratio']:.2f}x**"]
        if what == "train_step":
            peak = r.get("official_peak_mb"), r.get("ours_peak_mb")
            cells.append(" / ".join("—" if x is None else f"{x:.0f}" for x in peak))
        return cells

    lines = ["| case | train step: official ms [min–max] | ours ms [min–max] | ratio | step peak MB official / ours "
             "| forward: official ms | ours ms | ratio |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    lines += ["| " + " | ".join([row["case"], *cell(row, "train_step"), *cell(row, "forward")]) + " |"
              for row in rows if "epoch" not in row]
    epochs = [row for row in rows if "epoch" in row]
    if epochs:
        lines += ["", "| case | epoch: official ms [min–max] | ours ms [min–max] | ratio |",
                  "| --- | ---: | ---: | ---: |"]
        lines += ["| " + " | ".join([row["case"], *cell(row, "epoch")]) + " |" for row in epochs]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in METHODS:
        parser.add_argument(f"--{name}", type=Path, help=f"the official {name.upper()} checkout")
    parser.add_argument("--emt-bert", nargs="+", choices=list(EMT_BERTS), default=list(EMT_BERTS),
                        help="the EMT-DLFR rows' text encoders")
    parser.add_argument("--batch", type=int, nargs="+", default=[32, 1])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epoch", action="store_true", help="also a whole epoch with data loading (LMF, MulT)")
    parser.add_argument("--only-epoch", action="store_true", help="only the whole-epoch comparisons")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "vs_official_cpu.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []
    words = mosi_word_counts()
    if words is None:
        print(f"skipped the MOSI word-count cases: {MOSI_TRANSCRIPTS} is absent")
    for b in [] if args.only_epoch else args.batch:
        for which in ("lmf", "tfn"):
            if getattr(args, which) and b > 1:  # the official text sub-network squeezes the batch away at batch 1
                for counts in (None,) if words is None else (None, words):
                    rows.append(lmf_tfn(which, getattr(args, which).resolve(), b, args.repeats, counts))
        if args.mult:
            for label, lengths in (("aligned 50", {"text": 50, "audio": 50, "vision": 50}),
                                   ("unaligned 50/500/500", {"text": 50, "audio": 500, "vision": 500})):
                rows.append(mult(args.mult.resolve(), lengths, b, args.repeats, label))
        if args.sft and b > 1:  # the official SFT squeezes the batch away at batch 1
            rows.append(sft(args.sft.resolve(), b, args.repeats))
        if args.dmd and b > 1:  # the official margin loss needs two samples
            rows.append(dmd(args.dmd.resolve(), b, args.repeats))
        if args.emt_dlfr and b > 1:  # the official forward squeezes the batch away (text lengths, LSTM states)
            rows += [emt_dlfr(args.emt_dlfr.resolve(), bert, b, args.repeats, words) for bert in args.emt_bert]
    if args.epoch or args.only_epoch:
        with tempfile.TemporaryDirectory() as folder:
            if args.lmf:
                rows.append(lmf_epoch(args.lmf.resolve(), Path(folder), args.repeats))
            if args.mult:
                rows.append(mult_epoch(args.mult.resolve(), Path(folder), args.repeats))
    skipped = [n for n in METHODS if not getattr(args, n)]
    for name in skipped:
        print(f"skipped {name}: no --{name} checkout given")
    print(markdown(rows))
    write_json(args.out, {"machine": machine_description(), "threads": args.threads, "torch": torch.__version__,
                          "repeats": args.repeats,
                          "dropout": "0.1; DMD and EMT-DLFR: their official MOSI values",
                          "optimizer": "official: Adam; ours: fused Adam", "skipped": skipped, "rows": rows})


if __name__ == "__main__":
    main()
