"""Experiment grids (`affectfuse run EXPERIMENT.toml`: plan, runner, store, report) and hyper-parameter search (tune).

An experiment is models x data specs x settings x seeds. Each (model, data, setting) is a *cell*; each (cell, seed) a
*run*. `plan` expands the file into runs, `run_experiment` executes the missing ones (local processes by default, or
a Ray cluster) and stores every result in one SQLite file, and `report` writes the mean ± std tables and the plots.
"""

from .plan import Experiment, Run, Setting, load_experiment, plan
from .runner import run_experiment
from .store import ResultStore

__all__ = ["Experiment", "ResultStore", "Run", "Setting", "load_experiment", "plan", "run_experiment"]
