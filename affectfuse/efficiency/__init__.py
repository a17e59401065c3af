"""Efficiency profiling: parameters, FLOPs/MACs, latency and peak memory of every registered model."""
