"""Study ``bench-dask``: ``posterior`` on Dask workers against one process: same numbers? speed?

The same isolated frames go through ``bayes-smlm posterior --method nuts`` three ways, each a
fresh process with the same filled JAX compilation cache (a first, untimed run fills it):

1. one process, ``--out F.nc`` (as without Dask);
2. ``--scheduler local:1`` — one Dask worker process, chunks of ``chunk_frames`` into a zarr store
   (the cost of the cluster, the chunks and the store);
3. ``--scheduler local:2`` — two worker processes.

Table 1: wall time of each (median of ``repeats``) and its ratio to the one process. Table 2: the
identity check — every variable of every group of the stores against the one-process file,
bitwise (θ draws, sampler statistics, KDE moments, diagnostics).

A LocalCluster's workers share this machine's cores with each other: on a 2-core machine two
workers cannot beat one process that already runs a frame per core (:mod:`bayes_smlm.parallel`);
the table shows what the scheduling costs. Workers on other machines add their cores.
Run: ``bayes-smlm study bench-dask [--preset smoke|cpu|paper]``.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from bayes_smlm.studies.bench_speed import cli_wall_seconds
from bayes_smlm.studies.registry import begin_study, fresh_seed, write_metrics

from bayes_smlm.forward.simulate import simulate
from bayes_smlm.forward.tasks import get_task
from bayes_smlm.io.atomic import write_npz
from bayes_smlm.io.posteriors import load_posterior
from bayes_smlm.reporting.markdown import markdown_table, provenance, write_report

NAME = "bench-dask"
PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {"frames": 2, "draws": 50, "chunk_frames": 1, "repeats": 1},
    "cpu": {"frames": 256, "draws": 1000, "chunk_frames": 64, "repeats": 3},
    "paper": {"frames": 1024, "draws": 1000, "chunk_frames": 128, "repeats": 3},
}
RUNS = (
    ("one process (.nc)", None),
    ("Dask, 1 local worker (.zarr)", "local:1"),
    ("Dask, 2 local workers (.zarr)", "local:2"),
)


def differing_variables(expected, actual) -> list[str]:
    """``group/name`` of every variable whose values are not bitwise equal (or missing)."""
    differ = []
    for group in expected.children:
        for name, var in expected[group].data_vars.items():
            if (
                group not in actual.children
                or name not in actual[group].data_vars
                or not np.array_equal(var.values, actual[group][name].values)
            ):
                differ.append(f"{group}/{name}")
    return differ


def run(preset: str = "cpu", seed: int = 0, out: Path | str = Path("reports") / NAME) -> Path:
    s, out = begin_study(preset, PRESETS, out)
    task = get_task("isolated")
    frames = simulate(task, s["frames"], fresh_seed(NAME, seed))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        npz = write_npz(
            work / "frames.npz", config=task.to_json(), adu=frames.adu, theta=frames.theta
        )
        cache = work / "jax-cache"
        cli_wall_seconds(npz, "nuts", [], cache, s["draws"], None, work / "warm.nc")
        reference = None
        for label, scheduler in RUNS:
            walls, method_seconds = [], []
            for _ in range(s["repeats"]):
                target = work / ("one.nc" if scheduler is None else "run.zarr")
                shutil.rmtree(target, ignore_errors=True)
                extra = (
                    []
                    if scheduler is None
                    else ["--scheduler", scheduler, "--chunk-frames", str(s["chunk_frames"])]
                )
                wall, inside = cli_wall_seconds(npz, "nuts", extra, cache, s["draws"], None, target)
                walls.append(wall)
                method_seconds.append(inside)
            tree = load_posterior(target)
            if reference is None:
                reference = tree
            differ = differing_variables(reference, tree)
            rows.append(
                {
                    "run": label,
                    "scheduler": scheduler,
                    "frames": s["frames"],
                    "wall_seconds": float(np.median(walls)),
                    "walls": walls,
                    "method_seconds": float(np.median(method_seconds)),
                    "differing_variables": differ,
                    "variables": sum(len(reference[g].data_vars) for g in reference.children),
                }
            )
            print(
                f"  {label}: {rows[-1]['wall_seconds']:.1f} s wall, {len(differ)} variables differ",
                flush=True,
            )
    one = rows[0]["wall_seconds"]
    for row in rows:
        row["per_one_process"] = row["wall_seconds"] / one
    write_metrics(out, NAME, preset, seed, runs=rows, settings=s)
    tables = [
        markdown_table(
            [
                "run",
                "frames",
                "wall (s, median)",
                "÷ one process",
                "method's seconds (sum over chunks)",
            ],
            [
                (
                    r["run"],
                    r["frames"],
                    f"{r['wall_seconds']:.1f}",
                    f"{r['per_one_process']:.2f}",
                    f"{r['method_seconds']:.1f}",
                )
                for r in rows
            ],
        ),
        markdown_table(
            ["run", "variables compared", "bitwise equal to one process"],
            [
                (
                    r["run"],
                    r["variables"],
                    "all"
                    if not r["differing_variables"]
                    else "not: " + ", ".join(r["differing_variables"]),
                )
                for r in rows[1:]
            ],
        ),
    ]
    for table in tables:
        print(table)
    prov = provenance(study=NAME, preset=preset, seed=seed)
    body = (
        "# `posterior` on Dask workers against one process\n\n"
        f"Preset `{preset}`, seed {seed}: `nuts` on {s['frames']} isolated frames, 4 chains × "
        f"{s['draws']} draws, chunks of {s['chunk_frames']} frames, every run a fresh "
        f"`bayes-smlm` process with the same filled compilation cache, median of "
        f"{s['repeats']}.\n\n" + "\n\n".join(tables)
    )
    return write_report(out, body, prov)
