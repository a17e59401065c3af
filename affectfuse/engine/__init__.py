"""The engine every method shares: training loop, evaluation with the papers' metrics, checkpoints, runs."""
