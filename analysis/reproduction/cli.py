"""`python -m orchestrator reproduce-report`: evaluate every study's run and write REPRODUCTION.md."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    report = subparsers.add_parser(
        "reproduce-report", help="judge each reproduction study from its run and write REPRODUCTION.md")
    report.add_argument("--runs", type=Path, default=Path("runs"), help="folder holding runs/<study> (default: runs)")
    report.add_argument("--out", type=Path, default=Path("REPRODUCTION.md"), help="the markdown file to write")
    report.add_argument("--figures", type=Path, default=Path("docs/reproduction"),
                        help="where the key figure of each study goes (PNG)")
    report.add_argument("--only", nargs="+", metavar="STUDY", help="judge only these studies")
    report.set_defaults(command=cmd_reproduce_report)


def cmd_reproduce_report(args: argparse.Namespace) -> int:
    from analysis.reproduction import STUDIES, study_named
    from analysis.reproduction.document import evaluate_studies, render

    try:
        studies = tuple(study_named(name) for name in args.only) if args.only else STUDIES
    except KeyError as error:
        print(f"error: --only: {error.args[0]}", file=sys.stderr)
        return 2
    outcomes = evaluate_studies(studies, args.runs, args.figures)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(outcomes, args.out))
    for outcome in outcomes:
        verdict = outcome.finding.verdict if outcome.finding else "not run"
        print(f"{outcome.study.name}: {verdict}")
    print(f"wrote {args.out} and figures in {args.figures}/")
    return 0
