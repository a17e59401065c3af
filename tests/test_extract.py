"""Raw clip -> features -> dataset -> prediction (`affectfuse extract` / `affectfuse predict`).

The tests write their own tiny clips (a tone plus a moving face-like drawing, see affectfuse/extract/synthclips.py)
and a tiny randomly initialised BERT in a temp folder, so they need neither ../shared nor downloaded weights. They
need PyAV and openSMILE (in the `test` extra); the vision parts also need MediaPipe, which is too big for the test
extra (with its jax dependency over 500 MB), so without it they run with vision left out and the face tests skip.
"""

from __future__ import annotations

import json
import math
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("av")
pytest.importorskip("opensmile")
pytest.importorskip("transformers")

from affectfuse.cli import main  # noqa: E402
from affectfuse.data.datasets import load_data  # noqa: E402
from affectfuse.extract.extractors import Features, split_words  # noqa: E402
from affectfuse.extract.media import find_clips, iter_frames, probe, read_audio  # noqa: E402
from affectfuse.extract.pipeline import align_to_words, extract_dataset, predict_clip  # noqa: E402
from affectfuse.extract.synthclips import write_clip  # noqa: E402
from affectfuse.extract.transcripts import read_transcripts, read_word_csv  # noqa: E402

try:  # installed *and* runnable: MediaPipe 0.10.14's Face Mesh fails with protobuf >= 7
    from affectfuse.extract.extractors import FaceMeshVision

    FaceMeshVision().check()
    HAVE_MEDIAPIPE = True
except ImportError:
    HAVE_MEDIAPIPE = False

needs_mediapipe = pytest.mark.skipif(
    not HAVE_MEDIAPIPE, reason="MediaPipe 0.10.14 with protobuf<5 (pip install 'affectfuse[extract]') is not usable"
)
VOCAB = ["good", "great", "bad", "awful", "the", "movie", "was", "fine", "it"]
TRANSCRIPTS = {
    "face_a": "the movie was good",
    "face_b": "it was awful",
    "face_c": "great movie",
    "face_d": "bad bad movie",
    "noface": "the movie was fine",
    "voice": "it was great",
}


def make_text_model(folder: Path, hidden: int = 32) -> Path:
    """A tiny BERT with a word-level vocabulary, saved like any local sentence-transformer folder."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *VOCAB]) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True).save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(VOCAB) + 5,
        hidden_size=hidden,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    """Face clips of 1.0 / 0.5 s, a face-less clip, an audio-only .wav, a broken .mp4, labels and transcripts."""
    root = tmp_path_factory.mktemp("clips")
    folder = root / "clips"
    write_clip(folder / "face_a.mp4", seconds=1.0, tone_hz=200, smile=1.0)
    write_clip(folder / "face_b.mp4", seconds=0.5, tone_hz=300, smile=-1.0)
    write_clip(folder / "face_c.mp4", seconds=0.6, tone_hz=250, smile=0.5)
    write_clip(folder / "face_d.mp4", seconds=0.6, tone_hz=320, smile=-0.5)
    write_clip(folder / "noface.mp4", seconds=0.6, face=False)
    write_clip(folder / "voice.wav", seconds=0.8, video=False)
    (folder / "broken.mp4").write_bytes(b"this is not a video" * 10)
    (folder / "notes.txt").write_text("not a clip")
    splits = {"face_a": "train", "face_b": "train", "voice": "train", "face_c": "valid", "face_d": "valid"}
    labels = [f"{c},{i - 2.5},{splits.get(c, 'test')}" for i, c in enumerate(TRANSCRIPTS)]
    (root / "labels.csv").write_text("clip_id,label,split\n" + "\n".join(labels) + "\n")
    (root / "transcripts.csv").write_text("clip_id,text\n" + "\n".join(f"{c},{t}" for c, t in TRANSCRIPTS.items()))
    make_text_model(root / "tinybert")
    return root


@pytest.fixture(scope="module")
def dataset(clips: Path, tmp_path_factory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("out") / "clips.pkl"
    report = extract_dataset(
        clips / "clips",
        out,
        labels=clips / "labels.csv",
        transcripts=clips / "transcripts.csv",
        text_model=str(clips / "tinybert"),
        vision=HAVE_MEDIAPIPE,
        progress=False,
    )
    return out, report


# ---------------------------------------------------------------------------------------------------------------------
# decoding and small pieces
# ---------------------------------------------------------------------------------------------------------------------


def test_synthetic_clip_decodes_in_proportion_to_its_duration(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "c.mp4", seconds=1.0, fps=15)
    info = probe(clip)
    assert info.has_audio and info.has_video and math.isclose(info.duration, 1.0, abs_tol=0.1)
    audio = read_audio(clip, 16000)
    assert abs(len(audio) - 16000) < 2048 and np.isfinite(audio).all() and np.abs(audio).max() > 0.1
    times = [t for t, frame in iter_frames(clip, fps=5) if frame.shape == (96, 128, 3)]
    assert len(times) == 5 and np.all(np.diff(times) > 0.15)


def test_find_clips_and_bad_input(tmp_path: Path, clips: Path) -> None:
    names = [c.name for c in find_clips(clips / "clips")]
    assert "notes.txt" not in names and names == sorted(names) and "voice.wav" in names
    with pytest.raises(FileNotFoundError, match="no such clip"):
        find_clips(tmp_path / "missing.mp4")
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(ValueError, match=r"expected a clip with suffix .*\.mp4"):
        find_clips(tmp_path / "x.txt")
    with pytest.raises(ValueError, match="holds no clips"):
        find_clips(tmp_path)


def test_split_words_and_transcript_files(tmp_path: Path) -> None:
    assert split_words("It was  good!") == ["It", "was", "good!"]
    assert split_words("我不想 ok") == ["我", "不", "想", "ok"]
    (tmp_path / "t.csv").write_text("id,text,label,mode\nv_1,hello there,1.0,train\n")
    assert read_transcripts(tmp_path / "t.csv") == {"v_1": "hello there"}
    (tmp_path / "w.csv").write_text("clip_id,word,start,end\nc,hi,0.0,0.2\nc,you,0.3,0.5\n")
    words = read_word_csv(tmp_path / "w.csv")["c"]
    assert words.words == ["hi", "you"] and words.times.tolist() == [[0.0, 0.2], [0.3, 0.5]]
    (tmp_path / "bad.csv").write_text("c,hi,0.5,0.1\n")
    with pytest.raises(ValueError, match=r"bad\.csv: line 1: word 'hi' needs 0 <= start <= end"):
        read_word_csv(tmp_path / "bad.csv")


def test_align_to_words_averages_frames_inside_each_word() -> None:
    values = np.arange(10, dtype=np.float32)[:, None]
    times = np.stack([np.arange(10) * 0.1, np.arange(10) * 0.1 + 0.1], 1)  # midpoints 0.05, 0.15, ...
    mask = np.ones(10, bool)
    mask[7] = False  # a face-less frame is left out of the mean
    words = np.array([[0.0, 0.3], [0.6, 0.9], [2.0, 2.1]])
    out, ok = align_to_words(Features(values, times, mask), words)
    assert out[:, 0].tolist() == [1.0, 7.0, 9.0] and ok.all()  # (0+1+2)/3; (6+8)/2; nearest real frame
    out, ok = align_to_words(Features(values, times, np.zeros(10, bool)), words)
    assert not ok.any() and not out.any()


# ---------------------------------------------------------------------------------------------------------------------
# extract
# ---------------------------------------------------------------------------------------------------------------------


def test_extract_writes_a_dataset_the_core_readers_load(dataset) -> None:
    out, report = dataset
    assert report.clips == 7 and report.extracted == 6 and list(report.failed) == ["broken"]
    assert "broken" in report.failed and "not a readable audio/video file" in report.failed["broken"]
    corpus = load_data(str(out))
    assert corpus.spec.extractors["audio"] == "opensmile-eGeMAPSv02-lld"
    assert corpus.spec.extractors["text"] == "word-embeddings-tinybert-32d"
    expected_vision = "mediapipe-facemesh-contours-15fps" if HAVE_MEDIAPIPE else "none"
    assert corpus.spec.extractors["vision"] == expected_vision
    assert corpus.spec.dims == {"text": 32, "audio": 25, "vision": 259 if HAVE_MEDIAPIPE else 1}
    assert not corpus.spec.aligned
    assert {s: len(x) for s, x in corpus.splits.items()} == {"train": 3, "valid": 2, "test": 1}
    for split in corpus.splits.values():
        for m, x in split.features.items():
            assert np.isfinite(x).all(), m
    # frames in proportion to duration: 100 audio frames/s, and the words of the transcript
    train = corpus.split("train")
    steps = dict(zip(train.ids, train.masks["audio"].sum(1), strict=True))
    assert 90 <= steps["face_a"] <= 101 and 40 <= steps["face_b"] <= 51 and 70 <= steps["voice"] <= 81
    text_steps = dict(zip(train.ids, train.masks["text"].sum(1), strict=True))
    assert text_steps == {"face_a": 4, "face_b": 3, "voice": 3}
    assert np.allclose(train.labels[:, 0], [-2.5, -1.5, 2.5])
    voice = train.ids.index("voice")
    assert not train.masks["vision"][voice].any() and not train.features["vision"][voice].any()
    if HAVE_MEDIAPIPE:  # without it vision is left out of every clip, so there is nothing to report per clip
        assert any("no video stream" in n for n in report.notes["voice"])
    with open(out, "rb") as f:
        raw = pickle.load(f)
    assert raw["config"]["affectfuse_extract"]["extractors"] == corpus.spec.extractors
    assert raw["config"]["audio"]["settings"]["feature_set"] == "eGeMAPSv02"
    assert "the movie was good" in list(raw["train"]["raw_text"])
    assert json.loads(out.with_name(out.name + ".report.json").read_text())["failed"].keys() == {"broken"}


@needs_mediapipe
def test_vision_finds_the_drawn_face_or_reports_it_and_no_face_gives_zeros_and_mask(dataset) -> None:
    out, report = dataset
    corpus = load_data(str(out))
    test = corpus.split("test")
    i = test.ids.index("noface")
    assert not test.masks["vision"][i].any() and not test.features["vision"][i].any()
    assert any("no face found" in n for n in report.notes["noface"])
    train = corpus.split("train")
    a = train.ids.index("face_a")
    frames = int(train.masks["vision"][a].sum())
    reported = any("no face" in n for n in report.notes.get("face_a", []))
    # 15 frames/s over 1 s: either the drawing was taken for a face in some frames, or the report says it was not
    assert frames > 0 or reported
    if frames:
        x = train.features["vision"][a][train.masks["vision"][a]]
        assert np.isfinite(x).all() and np.allclose(np.sqrt((x[:, :256].reshape(-1, 128, 2) ** 2).sum(2).mean(1)), 1)


def test_rerun_skips_clips_already_extracted_and_redoes_changed_transcripts(dataset, clips: Path) -> None:
    out, _ = dataset
    before = load_data(str(out))
    kwargs = dict(labels=clips / "labels.csv", text_model=str(clips / "tinybert"), vision=HAVE_MEDIAPIPE)
    report = extract_dataset(clips / "clips", out, transcripts=clips / "transcripts.csv", progress=False, **kwargs)
    assert report.extracted == 0 and report.reused == 6 and list(report.failed) == ["broken"]
    after = load_data(str(out))
    for s, split in before.splits.items():
        for m in split.features:
            assert np.array_equal(split.features[m], after.splits[s].features[m])
    changed = clips / "transcripts2.csv"
    changed.write_text((clips / "transcripts.csv").read_text().replace("it was awful", "awful"))
    report = extract_dataset(clips / "clips", out, transcripts=changed, progress=False, **kwargs)
    assert report.extracted == 1 and report.reused == 5


def test_aligned_dataset_has_one_step_per_word(clips: Path, tmp_path: Path) -> None:
    words = tmp_path / "words.csv"
    words.write_text("clip_id,word,start,end\nface_a,good,0.0,0.4\nface_a,movie,0.4,1.0\n")
    out = tmp_path / "aligned.pkl"
    report = extract_dataset(
        clips / "clips",
        out,
        labels=clips / "labels.csv",
        transcripts=clips / "transcripts.csv",
        words=words,
        aligned=True,
        text_model=str(clips / "tinybert"),
        vision=False,
        progress=False,
    )
    corpus = load_data(str(out))
    assert corpus.spec.aligned and report.dims["vision"] == 1
    train = corpus.split("train")
    assert {m: x.shape[1] for m, x in train.features.items()} == {"text": 3, "audio": 3, "vision": 3}
    a = train.ids.index("face_a")
    assert train.masks["text"][a].tolist() == [True, True, False]
    assert np.isfinite(train.features["audio"]).all() and train.features["audio"][a, :2].any()
    with open(out, "rb") as f:
        timing = pickle.load(f)["config"]["affectfuse_extract"]["word_timing"]
    assert timing["face_a"] == "given" and timing["face_b"] == "uniform over the clip"


def test_parallel_workers_give_the_same_features(clips: Path, tmp_path: Path, monkeypatch) -> None:
    # fork instead of spawn only to spare each worker re-importing torch (seconds on 2 shared cores); this process
    # has no MediaPipe or text-model threads running, which is what makes spawn the default
    monkeypatch.setattr("affectfuse.extract.pipeline.POOL_START_METHOD", "fork")
    one, two = tmp_path / "one.pkl", tmp_path / "two.pkl"
    folder = tmp_path / "two_clips"
    folder.mkdir()
    for name in ("face_b.mp4", "voice.wav"):
        (folder / name).write_bytes((clips / "clips" / name).read_bytes())
    kwargs = dict(text=False, vision=False)  # each spawned worker imports what it uses; keep it to audio here
    extract_dataset(folder, one, workers=1, progress=False, **kwargs)
    report = extract_dataset(folder, two, workers=2, progress=False, **kwargs)
    assert report.extracted == 2 and not report.failed
    a, b = load_data(str(one)).split("test"), load_data(str(two)).split("test")
    for m in a.features:
        assert np.allclose(a.features[m], b.features[m], atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------------
# predict
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(dataset, tmp_path_factory) -> Path:
    from affectfuse.engine.runs import train_model
    from tests.conftest import TINY

    out, _ = dataset
    run = tmp_path_factory.mktemp("run")
    overrides = {**{f"{k}": v for k, v in TINY["lmf"].items()}, "train.max_epochs": 2, "train.batch_size": 2}
    train_model("lmf", load_data(str(out)), overrides=overrides, out_dir=run, progress=False)
    return run / "best.pt"


def test_predict_scores_a_clip_with_the_checkpoints_extractors(checkpoint: Path, clips: Path) -> None:
    result = predict_clip(
        clips / "clips" / "face_c.mp4", checkpoint, transcript="great movie", text_model=str(clips / "tinybert")
    )
    assert math.isfinite(result["score"]) and result["polarity"] in ("positive", "negative", "neutral")
    assert result["words"] == ["great", "movie"] and result["extractors"]["text"] == "word-embeddings-tinybert-32d"
    no_text = predict_clip(clips / "clips" / "voice.wav", checkpoint, text_model=str(clips / "tinybert"))
    assert math.isfinite(no_text["score"]) and any("no transcript" in n for n in no_text["notes"])


def test_predict_standardises_a_clip_for_a_model_trained_on_standardised_features(clips, tmp_path) -> None:
    from affectfuse.data.standardisation import standardise
    from affectfuse.engine.checkpoint import load_model
    from affectfuse.engine.evaluate import predict
    from affectfuse.engine.runs import train_model
    from tests.conftest import TINY

    # audio and text only: MediaPipe's face tracking carries state from clip to clip, so a clip's vision features
    # extracted alone differ slightly from the same clip's row in a dataset (-0.002 vs 0.010 on a landmark mean)
    out = tmp_path / "clips.pkl"
    extract_dataset(clips / "clips", out, labels=clips / "labels.csv", transcripts=clips / "transcripts.csv",
                    text_model=str(clips / "tinybert"), vision=False, progress=False)
    raw = load_data(str(out))
    overrides = {**TINY["lmf"], "train.max_epochs": 1, "train.batch_size": 2}
    train_model("lmf", standardise(raw), overrides=overrides, out_dir=tmp_path / "run", progress=False)
    result = predict_clip(clips / "clips" / "face_c.mp4", tmp_path / "run" / "best.pt",
                          transcript=TRANSCRIPTS["face_c"], text_model=str(clips / "tinybert"))
    valid = raw.split("valid")  # face_c, extracted as a raw feature row of the dataset: the model standardises it
    ids, predictions, _ = predict(load_model(tmp_path / "run" / "best.pt"), valid)
    assert result["score"] == pytest.approx(float(predictions[ids.index("face_c"), 0]), abs=1e-5)
    assert not result["extractors"]["audio"].endswith("+z(train)")


def test_predict_refuses_another_extractor_or_dimension(checkpoint: Path, clips: Path, tmp_path: Path) -> None:
    clip = clips / "clips" / "face_c.mp4"
    other = make_text_model(tmp_path / "tinybert", hidden=16)  # same name, another dimension
    with pytest.raises(ValueError, match=r"gives extractor 'word-embeddings-tinybert-16d', but .*-32d' is needed"):
        predict_clip(clip, checkpoint, transcript="good", text_model=str(other))
    with pytest.raises(ValueError, match="used the local model 'tinybert': pass its folder as --text-model"):
        predict_clip(clip, checkpoint, transcript="good")


def test_predict_refuses_a_checkpoint_trained_on_other_features(tmp_path: Path, clips: Path) -> None:
    from affectfuse.engine.runs import train_model
    from tests.conftest import TINY

    corpus = load_data("synthetic:n_train=16,dims.text=32,dims.audio=25,dims.vision=259")
    overrides = {**TINY["lmf"], "train.max_epochs": 1}
    train_model("lmf", corpus, overrides=overrides, out_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match=r"extractors \{'text': 'synthetic'.*cannot re-create"):
        predict_clip(clips / "clips" / "face_c.mp4", tmp_path / "best.pt")


def test_cli_extract_and_predict(clips: Path, checkpoint: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cli.pkl"
    args = ["extract", str(clips / "clips" / "face_b.mp4"), "--out", str(out), "--no-vision", "--json"]
    assert main([*args, "--text-model", str(clips / "tinybert"), "--transcripts", str(clips / "transcripts.csv")]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["splits"] == {"test": 1} and report["extractors"]["vision"] == "none"
    assert main(["extract", str(clips / "clips" / "face_b.mp4"), "--out", str(out), "--aligned", "--unaligned"]) == 1
    assert "either --aligned or --unaligned" in capsys.readouterr().err
    clip = str(clips / "clips" / "face_c.mp4")
    assert main(["predict", clip, "--checkpoint", str(checkpoint), "--text-model", str(clips / "tinybert")]) == 0
    assert "sentiment" in capsys.readouterr().out
    assert main(["predict", clip, "--checkpoint", str(tmp_path / "none.pt")]) == 1
    assert "none.pt does not exist" in capsys.readouterr().err
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    assert main(["extract", clip, "--out", str(blocker / "x.pkl"), "--no-vision"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("affectfuse extract: error: cannot write") and "face_c" not in err  # the output, not the clip


def test_a_missing_extra_ends_with_one_clear_line(monkeypatch, clips: Path, tmp_path: Path, capsys) -> None:
    monkeypatch.setitem(sys.modules, "opensmile", None)  # makes `import opensmile` raise ImportError
    clip = str(clips / "clips" / "face_b.mp4")
    assert main(["extract", clip, "--out", str(tmp_path / "x.pkl"), "--no-vision", "--no-text"]) == 1
    assert "needs openSMILE: pip install 'affectfuse[extract]'" in capsys.readouterr().err
    assert not (tmp_path / "x.pkl").exists()
