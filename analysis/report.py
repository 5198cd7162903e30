"""`write_report`: a run's analysis as a folder of PNG figures, CSV tables and an index page (Markdown and a
self-contained HTML with the figures embedded), written to `<run_dir>/report/`.

    report/
      index.html                 everything in one file (figures as base64), open it in a browser
      index.md                   the same, with the figures linked
      summary.csv                the per-group comparison table, raw numbers
      success_by_<param>.csv     P(success) per group and parameter value (when a parameter is swept)
      eureka_detections.csv      the detector's result for every trial
      success_vs_<param>.png, kaplan_meier.png, learning_curves.png, eureka_steps.png
"""

from __future__ import annotations

import base64
import datetime
import html
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from analysis.compare import detector_agreement
from analysis.eureka import DetectionParams
from analysis.load import read_trials
from analysis.plots import plot_eureka_histogram, plot_kaplan_meier, plot_learning_curves, plot_success_probability
from analysis.success import IntervalMethod
from analysis.summary import AUTO, RunAnalysis, analyze_run

DPI = 110
METHOD_NAMES = {"wilson": "Wilson", "wilsoncc": "Wilson (continuity-corrected)", "exact": "Clopper-Pearson"}


@dataclass(frozen=True)
class ReportFigure:
    file: str
    title: str
    caption: str
    figure: Figure | None  # None: skipped, the caption says why


def write_report(
    run_dir: Path | str,
    out_dir: Path | str | None = None,
    *,
    group_by: str | None = AUTO,
    param: str | None = AUTO,
    metric: str | None = None,
    reference: str | None = None,
    confidence: float = 0.95,
    method: IntervalMethod = "wilson",
    detection: DetectionParams | None = None,
    logistic_degree: int | None = 1,
    max_curves_per_group: int = 400,
) -> Path:
    """Analyse the run and write its report (default `<run_dir>/report/`); return the path of index.html.

    Defaults: group by `model.kernel` (when present), sweep `train.lr` (when it takes several values; otherwise
    that plot is skipped with a note), the trainer's success metric, the softmax kernel as reference.
    """
    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir is not None else run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    analysis = analyze_run(
        run_dir, group_by=group_by, param=param, metric=metric, reference=reference, confidence=confidence,
        method=method, detection=detection, logistic_degree=logistic_degree,
    )
    figures = build_figures(analysis, confidence=confidence, method=method, max_curves_per_group=max_curves_per_group)
    for item in figures:
        if item.figure is not None:
            item.figure.savefig(out / item.file, dpi=DPI)
    write_tables(analysis, out)
    title = f"Sweep report: {run_dir.resolve().name}"
    (out / "index.md").write_text(render_markdown(analysis, figures, title, run_dir))
    index = out / "index.html"
    index.write_text(render_html(analysis, figures, title, run_dir, out))
    return index


def build_figures(
    analysis: RunAnalysis, *, confidence: float, method: IntervalMethod, max_curves_per_group: int
) -> list[ReportFigure]:
    """The report's figures in page order; a figure that cannot be drawn is kept with a note instead."""
    group_title = analysis.group_by
    figures: list[ReportFigure] = []
    if analysis.success is not None and analysis.param is not None:
        figures.append(ReportFigure(
            f"success_vs_{_slug(analysis.param)}.png",
            f"Success probability vs {analysis.param}",
            f"P(success) among completed trials (trainer's threshold) with {confidence:.0%} {METHOD_NAMES[method]}"
            " intervals and a logistic fit; below, the fraction of trials that diverged (not counted as failures).",
            plot_success_probability(analysis.success, analysis.param, analysis.logistic, confidence=confidence,
                                     method_name=METHOD_NAMES[method], group_title=group_title),
        ))
    else:
        figures.append(ReportFigure("", "Success probability", _skipped_param_note(analysis), None))
    figures.append(ReportFigure(
        "kaplan_meier.png",
        "Time to Eureka (Kaplan-Meier)",
        "Probability that a completed trial has not made the jump yet, by training step; trials that never jumped "
        f"are censored at their step budget. Bands: pointwise {confidence:.0%} (log-log); dotted: medians.",
        plot_kaplan_meier(analysis.km, group_title=group_title),
    ))
    figures.append(ReportFigure(
        "learning_curves.png",
        "Learning curves",
        f"{analysis.metric} of every trial (a random sample of {max_curves_per_group} per group on large runs), "
        "coloured by the detector's outcome; diverged trials in red.",
        plot_learning_curves(analysis.curves, analysis.detections, analysis.trials, analysis.metric,
                             group_by=analysis.group_by, max_per_group=max_curves_per_group),
    ))
    figures.append(ReportFigure(
        "eureka_steps.png",
        "Eureka steps",
        "Histogram of the detected jump step of the trials that jumped.",
        plot_eureka_histogram(analysis.tte, group_title=group_title),
    ))
    return figures


def write_tables(analysis: RunAnalysis, out: Path) -> None:
    analysis.comparison.to_csv(out / "summary.csv", index=False)
    if analysis.success is not None and analysis.param is not None:
        analysis.success.to_csv(out / f"success_by_{_slug(analysis.param)}.csv", index=False)
    analysis.detections.to_csv(out / "eureka_detections.csv")


def display_table(analysis: RunAnalysis) -> pd.DataFrame:
    """The comparison table formatted for reading: counts, estimates with intervals, tests against the reference."""
    rows = []
    for r in analysis.comparison.itertuples(index=False):
        is_reference = r.group == analysis.reference
        rows.append({
            analysis.group_by or "group": f"{r.group} (reference)" if is_reference else r.group,
            "trials": r.n_trials,
            "completed": r.n_completed,
            "diverged": r.n_diverged,
            "failed": r.n_failed,
            "success": f"{r.n_success}/{r.n_completed}",
            "P(success) [CI]": _estimate(r.p_success, r.p_low, r.p_high, "{:.3f}"),
            "Fisher p (odds ratio)": "" if is_reference else f"{_p(r.fisher_p)} ({_num(r.fisher_odds_ratio)})",
            "Eureka (detected)": r.n_eureka,
            "censored": r.n_censored,
            "median Eureka step [CI]": _estimate(r.median_eureka_step, r.median_low, r.median_high, "{:.0f}"),
            "jumps per 1k steps (ratio)": f"{_num(r.eureka_per_1k_steps)} ({_num(r.rate_ratio)})",
            "log-rank p": "" if is_reference else _p(r.logrank_p),
        })
    return pd.DataFrame(rows)


def render_markdown(analysis: RunAnalysis, figures: list[ReportFigure], title: str, run_dir: Path) -> str:
    lines = [f"# {title}", "", *_header_lines(analysis, run_dir), "", "## Comparison", "",
             markdown_table(display_table(analysis)), "", *_table_notes(analysis), ""]
    for item in figures:
        lines += [f"## {item.title}", "", item.caption, ""]
        if item.figure is not None:
            lines += [f"![{item.title}]({item.file})", ""]
    lines += ["## Detector vs trainer threshold", "", markdown_table(_agreement(analysis)), "",
              "## Detection settings", "", markdown_table(_settings(analysis)), ""]
    launches = launch_table(run_dir)
    if not launches.empty:
        lines += ["## Provenance", "", PROVENANCE_NOTE, "", markdown_table(launches), ""]
    return "\n".join(lines)


def render_html(analysis: RunAnalysis, figures: list[ReportFigure], title: str, run_dir: Path, out: Path) -> str:
    parts = [
        "<!DOCTYPE html>", "<html><head><meta charset='utf-8'>", f"<title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style>", "</head><body>", f"<h1>{html.escape(title)}</h1>",
        *[f"<p>{_inline_html(line)}</p>" for line in _header_lines(analysis, run_dir) if line],
        "<h2>Comparison</h2>",
        display_table(analysis).to_html(index=False, classes="summary", border=0),
        *[f"<p class='note'>{_inline_html(line)}</p>" for line in _table_notes(analysis)],
    ]
    for item in figures:
        parts += [f"<h2>{html.escape(item.title)}</h2>", f"<p>{html.escape(item.caption)}</p>"]
        if item.figure is not None:
            data = base64.b64encode((out / item.file).read_bytes()).decode("ascii")
            parts.append(f"<img alt='{html.escape(item.title)}' src='data:image/png;base64,{data}'>")
    parts += ["<h2>Detector vs trainer threshold</h2>", _agreement(analysis).to_html(index=False, border=0),
              "<h2>Detection settings</h2>", _settings(analysis).to_html(index=False, border=0)]
    launches = launch_table(run_dir)
    if not launches.empty:
        parts += ["<h2>Provenance</h2>", f"<p>{html.escape(PROVENANCE_NOTE)}</p>",
                  launches.to_html(index=False, border=0)]
    parts.append("</body></html>")
    return "\n".join(parts)


PROVENANCE_NOTE = ("Each launch into this run directory, with the code that ran: the project's git commit (* = "
                   "uncommitted changes to tracked files), the versions, the host, and how many of the trials "
                   "reported here it recorded.")


def launch_table(run_dir: Path) -> pd.DataFrame:
    """One row per launch (launches.jsonl) with its provenance and its count of trials in trials.parquet."""
    from orchestrator.store import RunStore

    recorded = read_trials(run_dir, ["launch_id"])["launch_id"].astype(str).value_counts()
    rows = []
    for launch in RunStore(run_dir).read_launches():
        origin = launch.get("provenance") or {}
        versions = origin.get("versions") or {}
        commit = (origin.get("git_commit") or "none")[:12] + ("*" if origin.get("git_dirty") else "")
        rows.append({"launch": launch.get("launch_id"), "started": launch.get("started_at"), "commit": commit,
                     "python": origin.get("python"), "torch": versions.get("torch"), "ray": versions.get("ray"),
                     "optuna": versions.get("optuna"), "host": origin.get("host"),
                     "trials recorded": int(recorded.get(launch.get("launch_id"), 0))})
    return pd.DataFrame(rows)


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table of a DataFrame's cells as text."""
    def cell(value: object) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    header = "| " + " | ".join(cell(c) for c in frame.columns) + " |"
    rule = "|" + "|".join(" --- " for _ in frame.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def _header_lines(analysis: RunAnalysis, run_dir: Path) -> list[str]:
    status = analysis.trials["status"].astype(str).value_counts()
    counts = ", ".join(f"{int(status.get(s, 0))} {s}" for s in ("completed", "diverged", "failed"))
    when = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    grouping = f"`{analysis.group_by}`" if analysis.group_by else "none (all trials together)"
    swept = f"`{analysis.param}`" if analysis.param else "none"
    better = "higher" if analysis.direction == "max" else "lower"
    lines = [
        f"Run `{run_dir.resolve()}`, {len(analysis.trials)} finished trials: {counts}. Generated {when}.",
        "",
        f"Groups: {grouping}; swept parameter: {swept}; curves judged on `{analysis.metric}` ({better} is better).",
    ]
    for note in analysis.notes:
        lines += ["", f"Note: {note}"]
    return lines


def _table_notes(analysis: RunAnalysis) -> list[str]:
    return [
        f"Tests compare each group with the reference `{analysis.reference}`, pooled over the other swept "
        "parameters. P(success) is the trainer's threshold judgement among completed trials; diverged and failed "
        "trials are counted apart, never as failures to learn. Eureka = the detector's jump (threshold-free); "
        "trials without one are censored at their step budget. A median of inf lies beyond the budget (fewer than "
        "half of the trials jumped). Jumps per 1k steps = events per 1000 trial-steps at risk.",
    ]


def _agreement(analysis: RunAnalysis) -> pd.DataFrame:
    return detector_agreement(analysis.trials, analysis.detections).reset_index()


def _settings(analysis: RunAnalysis) -> pd.DataFrame:
    settings = {"metric": analysis.metric, "direction": analysis.direction, **asdict(analysis.detection_params)}
    return pd.DataFrame({"setting": list(settings), "value": [str(v) for v in settings.values()]})


def _skipped_param_note(analysis: RunAnalysis) -> str:
    note = next((n for n in analysis.notes if "success-probability plot is skipped" in n), None)
    return (note or "No swept parameter was chosen: the success-probability plot is skipped.").replace("`", "")


def _estimate(value: float, low: float, high: float, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{_fmt(value, fmt)} [{_fmt(low, fmt)}, {_fmt(high, fmt)}]"


def _fmt(value: float, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if math.isinf(value):
        return "> budget"
    return fmt.format(value)


def _p(value: float) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return "< 1e-300" if value == 0 else f"{value:.2g}"


def _num(value: float) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return f"{value:.3g}"


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name)


def _inline_html(text: str) -> str:
    """Escape text and render `code` spans."""
    pieces = html.escape(text).split("`")
    return "".join(f"<code>{piece}</code>" if i % 2 else piece for i, piece in enumerate(pieces))


_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 1em; }
th, td { padding: 0.3em 0.6em; border-bottom: 1px solid #ddd; text-align: right; }
th { background: #f4f4f4; }
td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; }
.note { font-size: 0.85em; color: #555; }
code { background: #f4f4f4; padding: 0 0.2em; }
"""
