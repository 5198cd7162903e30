"""The Optuna sampler named by `search.sampler`, set up for batches of configurations in flight at once."""

from __future__ import annotations

import warnings

import optuna

NSGA2_MAX_POPULATION = 50


def make_sampler(name: str, *, n_configs: int, parallel: int, n_objectives: int,
                 seed: int | None) -> optuna.samplers.BaseSampler:
    """tpe: TPE with the constant liar, so configurations asked while others run are spread out, not repeated.

    gp: Gaussian-process BO. cmaes: CMA-ES (categorical keys fall back to random sampling). nsga2: NSGA-II, for
    the two-objective search, with a population small enough for several generations within `n_configs`.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if name == "tpe":
            startup = min(10, max(parallel, n_configs // 4))
            return optuna.samplers.TPESampler(constant_liar=True, n_startup_trials=startup, seed=seed)
        if name == "gp":
            return optuna.samplers.GPSampler(seed=seed, n_startup_trials=min(10, max(parallel, n_configs // 4)))
        if name == "cmaes":
            return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
        if name == "nsga2":
            population = max(2, min(NSGA2_MAX_POPULATION, max(parallel, n_configs // 4)))
            return optuna.samplers.NSGAIISampler(population_size=population, seed=seed)
    raise ValueError(f"unknown sampler {name!r}; allowed: tpe, gp, cmaes, nsga2")  # the schema refuses it first
