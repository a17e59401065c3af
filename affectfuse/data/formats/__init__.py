"""On-disk formats of multimodal sentiment data: one module per format, a registry that recognises them by content.

Every reader returns a :class:`~affectfuse.data.corpus.Corpus` with float32 ``(N, T, D)`` features, boolean ``(N, T)``
masks (True on real steps) and ``(N, K)`` labels (float32 scores or int64 class indices). Malformed input raises
:class:`DataFormatError` naming the file, the split/key/modality and what was expected versus found; a missing file
raises :class:`FileNotFoundError` naming the path. NaN/inf features are rejected unless ``nonfinite="zero"``, in which
case they are replaced by 0 with a warning and counted in ``Corpus.nonfinite``.

Formats (`list_formats()`): MMSA ``aligned_50.pkl``/``unaligned_50.pkl``/``unaligned_39.pkl`` (`mmsa`); MulT
``*_data.pkl`` and ``*_data_noalign.pkl`` (`mult`); LMF ``mosi.pkl``/``iemocap.pkl``/``pom.pkl`` (`lmf`);
CMU-MultimodalSDK ``.csd`` (`csd`); MMSA-FET per-clip pickles (`mmsa_fet`); MFN-style HDF5 split files, POM
(`mfn_h5`); the CMU-MOSI bc-LSTM utterance corpus (`mosi_utterance`). `detect(path)` names the format of a file or
folder; `load_corpus(path)` reads it.

Pickles are opened in one place, `pickles.load_pickle`.
"""

# Import order is detection order: a folder of MMSA-FET clips is tried after the MFN and MOSI layouts.
from . import mmsa, mult, lmf, csd, mfn_h5, mosi_utterance, mmsa_fet  # noqa: F401,I001  (registers them)
from .common import IEMOCAP_EMOTIONS, POM_LMF_TRAITS, POM_MFN_TARGETS, SPLIT_ALIASES, normalise_split
from .csd import ComputationalSequence, load_csd_corpus, read_csd, segment_words
from .lmf import read_lmf_pickle
from .mfn_h5 import read_mfn_h5
from .mmsa import read_mmsa_pickle, write_mmsa_pickle
from .mmsa_fet import read_mmsa_fet
from .mosi_utterance import load_mosi_utterance
from .mult import read_mult_pickle
from .pickles import load_pickle
from .registry import detect, detect_format, get_format, list_formats, load_corpus, register_format

__all__ = [
    "IEMOCAP_EMOTIONS", "POM_LMF_TRAITS", "POM_MFN_TARGETS", "SPLIT_ALIASES", "ComputationalSequence", "detect",
    "detect_format", "get_format", "list_formats", "load_corpus", "load_csd_corpus", "load_mosi_utterance",
    "load_pickle", "normalise_split", "read_csd", "read_lmf_pickle", "read_mfn_h5", "read_mmsa_fet",
    "read_mmsa_pickle", "read_mult_pickle", "register_format", "segment_words", "write_mmsa_pickle",
]
