"""The paired statistics now live in doll: :mod:`doll.studies.stats` (``doll study``). This
module re-exports them for the benchmarks that still import ``paired_stats``."""
from doll.studies.stats import (  # noqa: F401
    T975,
    Z975,
    bootstrap_paired,
    curve_at,
    mean_sd,
    median_steps,
    steps_to_reach,
    t_interval,
    t_quantile,
)
