"""Do two independent `smc` runs agree on the frames NUTS flags? (issue: the reference's
self-consistency where NUTS fails.)

Reads a dense calibration report folder (its frames and its saved `nuts` posterior), runs `smc`
twice with different seeds on the frames NUTS flags, and prints per frame: KDE variance-map
Pearson r between the runs, the ratio of their summed variances, and |Δ log Z| in units of the
combined standard error. Bars: r ≥ 0.99, ratio within 5 %, |Δ log Z| ≤ 3 SE.

    scripts/venv-run python scripts/smc_agreement.py reports/calibration-paper
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from bayes_smlm.io.posteriors import load_posterior, result_from_datatree
from bayes_smlm.io.study_files import load_frames, posterior_path
from bayes_smlm.methods import get_method


def main(folder: str) -> int:
    out = Path(folder)
    nuts = result_from_datatree(load_posterior(posterior_path(out, "nuts")))
    frames = np.flatnonzero(nuts.flagged)
    if not frames.size:
        print("NUTS flags no frame here: nothing to check")
        return 0
    adu = load_frames(out)["adu"][frames]
    runs = [get_method("smc")(nuts.task, adu, seed=seed) for seed in (101, 202)]
    print("| frame | var r | Σvar ratio | |Δ log Z| / SE | smc flagged (run 1, run 2) |")
    print("|---|---|---|---|---|")
    passed = 0
    for i, frame in enumerate(frames):
        a, b = (r.kde_var[i].ravel() for r in runs)
        r = float(np.corrcoef(a, b)[0, 1])
        ratio = float(a.sum() / b.sum())
        lz = [run.evidence.log_evidence[i, 0] for run in runs]
        se = float(np.hypot(*(run.evidence.log_evidence_se[i, 0] for run in runs)))
        z = abs(lz[0] - lz[1]) / se
        ok = r >= 0.99 and abs(ratio - 1) <= 0.05 and z <= 3
        passed += ok
        print(
            f"| {frame} | {r:.4f} | {ratio:.3f} | {z:.2f} | "
            f"{bool(runs[0].flagged[i])}, {bool(runs[1].flagged[i])} |"
        )
    print(
        f"\n{passed} of {frames.size} NUTS-flagged frames meet all three bars; smc "
        f"{runs[0].seconds / frames.size:.2f} s/frame"
    )
    return 0 if passed == frames.size else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "reports/calibration-paper"))
