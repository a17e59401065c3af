"""From raw clips to features, offline: `affectfuse extract` (clips -> MMSA-layout dataset) and `affectfuse predict`.

Needs the optional extra ``affectfuse[extract]`` (PyAV, openSMILE, MediaPipe, transformers and the packaged
all-MiniLM-L6-v2); nothing is downloaded at run time. Importing this package imports none of them.
"""

from .pipeline import ClipFeatures, Extractors, ExtractReport, extract_clip, extract_dataset, predict_clip

__all__ = ["ClipFeatures", "ExtractReport", "Extractors", "extract_clip", "extract_dataset", "predict_clip"]
