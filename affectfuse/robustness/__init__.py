"""Robustness to missing features: the random-missing masks, the missing-rate/modality sweep, AUILC, reports."""
