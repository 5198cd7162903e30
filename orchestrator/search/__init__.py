"""Robust-region search: an Optuna study whose every evaluation is one configuration trained on K seeds.

    config     the search file (`search:` section): space, K, budget, sampler, objective, target
    objective  the Wilson lower bound of the success probability, median time to eureka, the pruning rule
    storage    where the study lives (SQLite in the run directory, or a SQLAlchemy URL), password masking
    samplers   the Optuna sampler for a name
    driver     the loop: ask, train seeds in rounds through the run's backend, prune, tell
    report     best configuration, robust region, importances, Pareto front, summary (plots in `plots`)
    cli        `search` and `search-status`
"""
