"""Analysis of sweep runs: load the parquet tables, detect Eureka jumps, success probabilities, time to Eureka.

Pandas in, pandas out; everything is vectorised over trials so that 100,000 trials analyse in seconds.

    from analysis import analyze_run
    result = analyze_run("runs/eureka")          # detections, Kaplan-Meier fits, comparison table, ...
    result.comparison

    from analysis.report import write_report
    write_report(Path("runs/eureka"))            # runs/eureka/report/index.html
"""

from __future__ import annotations

from analysis.lazy import exports

# name -> the module that defines it. Imported on first use (PEP 562), so that importing one submodule (the CLI's
# `analysis.reproduction.cli`, `analysis.load`) does not load scipy and matplotlib for every command.
_EXPORTS = {
    "compare_groups": "analysis.compare", "detector_agreement": "analysis.compare",
    "DetectionParams": "analysis.eureka", "detect_eureka": "analysis.eureka", "metric_direction": "analysis.eureka",
    "RunTablesMissingError": "analysis.load", "load_run": "analysis.load",
    "binomial_interval": "analysis.success", "fit_logistic": "analysis.success",
    "logistic_curves": "analysis.success", "success_probability": "analysis.success",
    "RunAnalysis": "analysis.summary", "analyze_run": "analysis.summary", "analyze_tables": "analysis.summary",
    "KaplanMeier": "analysis.survival", "kaplan_meier": "analysis.survival",
    "kaplan_meier_by_group": "analysis.survival", "logrank_test": "analysis.survival",
    "time_to_eureka": "analysis.survival",
}
__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = exports(__name__, _EXPORTS)
