"""Data: the batch type, in-memory corpora, on-disk formats, the synthetic corpus."""
