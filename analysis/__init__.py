"""Analysis of sweep runs: load the parquet tables, detect Eureka jumps, success probabilities, time to Eureka.

Pandas in, pandas out; everything is vectorised over trials so that 100,000 trials analyse in seconds.

    from analysis import analyze_run
    result = analyze_run("runs/eureka")          # detections, Kaplan-Meier fits, comparison table, ...
    result.comparison

    from analysis.report import write_report
    write_report(Path("runs/eureka"))            # runs/eureka/report/index.html
"""

from __future__ import annotations

from analysis.compare import compare_groups, detector_agreement
from analysis.eureka import DetectionParams, detect_eureka, metric_direction
from analysis.load import RunTablesMissingError, load_run
from analysis.success import binomial_interval, fit_logistic, logistic_curves, success_probability
from analysis.summary import RunAnalysis, analyze_run, analyze_tables
from analysis.survival import KaplanMeier, kaplan_meier, kaplan_meier_by_group, logrank_test, time_to_eureka

__all__ = [
    "DetectionParams",
    "KaplanMeier",
    "RunAnalysis",
    "RunTablesMissingError",
    "analyze_run",
    "analyze_tables",
    "binomial_interval",
    "compare_groups",
    "detect_eureka",
    "detector_agreement",
    "fit_logistic",
    "kaplan_meier",
    "kaplan_meier_by_group",
    "load_run",
    "logistic_curves",
    "logrank_test",
    "metric_direction",
    "success_probability",
    "time_to_eureka",
]
