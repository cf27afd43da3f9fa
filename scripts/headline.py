"""The README's headline table, built from reports/calibration-paper/metrics.json (never typed
by hand). It sits in README.md between the markers ``<!-- headline:start -->`` and
``<!-- headline:end -->``; ``scripts/quoted_numbers.py`` checks and writes it with the other
quoted numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- headline:start -->", "<!-- headline:end -->"
REPORT = "calibration-paper"
METHODS = ("smc", "nuts", "laplace", "auto", "chees", "ddpm")  # the exact reference first


def headline_table(root: Path = ROOT) -> str:
    metrics = json.loads((root / "reports" / REPORT / "metrics.json").read_text())
    prov = metrics["provenance"]
    rows = [
        "| method | 90 % KDE interval covers | z SD | share of \\|z\\| > 3 | signal Σvar ÷ "
        "exact | s/frame |",
        "|---|---|---|---|---|---|",
    ]
    for name in METHODS:
        s = metrics["methods"][name]["scalars"]
        rows.append(
            f"| `{name}`{' (reference)' if name == metrics['reference'] else ''} "
            f"| {s['kde_coverage_90']:.3f} | {s['z_sd']:.2f} | {s['z_abs_gt_3']:.3f} "
            f"| {s['signal_ratio_median']:.2f} | {s['seconds_per_frame']:.2f} |"
        )
    note = (
        f"`paper` task (10 emitters of 200 photons per 20 × 20 px frame), "
        f"{metrics['methods']['smc']['scalars']['frames']} fresh frames, "
        f"reports/{REPORT} (commit {prov['git_commit']}, {prov['cpu']})."
    )
    return "\n".join(rows) + "\n\n" + note


def replace_in(text: str, table: str) -> str:
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{table}\n{END}{tail}"
