"""The report of a sweep of training runs: collect the run records, their statistics, report.

- :mod:`~sorl_torchrl.recipes.sweep.collect` finds the run dirs and reads each run record;
- :mod:`~sorl_torchrl.recipes.sweep.variants` tells apart runs of different settings;
- :mod:`~sorl_torchrl.recipes.sweep.stats` computes success per env and task over seeds;
- :mod:`~sorl_torchrl.recipes.sweep.report` writes the tables, CSV files and plots.

``sorl-results`` (:mod:`sorl_torchrl.recipes.aggregate`) is their command line.
"""

from sorl_torchrl.recipes.sweep.collect import SweepRun, collect_runs, read_run
from sorl_torchrl.recipes.sweep.report import write_outputs
from sorl_torchrl.recipes.sweep.stats import aggregate, default_cells

__all__ = ["SweepRun", "aggregate", "collect_runs", "default_cells", "read_run", "write_outputs"]
