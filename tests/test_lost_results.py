"""Nothing accepted as finished that is not: resumable stores whose bookkeeping cannot lie, one
writer per output, study folders that hold one run, caches that heal, and full disks that cost a
rerun, never a result or a traceback."""

from __future__ import annotations

import contextlib
import errno
import json
import multiprocessing
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from test_cli import assert_one_line_error, run_cli

from bayes_smlm.errors import ConfigError
from bayes_smlm.forward.simulate import simulate
from bayes_smlm.io.atomic import NAME_MAX, OutputError, write_json, write_npz
from bayes_smlm.io.locks import hold_output, lock_path
from bayes_smlm.io.posteriors import load_posterior


@pytest.fixture
def frames16(tmp_path, isolated):
    batch = simulate(isolated, 16, 5)
    return write_npz(
        tmp_path / "f16.npz",
        adu=batch.adu,
        theta=batch.theta,
        kde=batch.kde,
        config=isolated.to_json(),
        seed=5,
    )


@contextlib.contextmanager
def small_disk(folder: Path, size: str):
    """A tmpfs of ``size`` mounted on ``folder`` (yields a function that resizes it), or None
    where this process may not mount one."""
    folder.mkdir()
    try:
        mounted = (
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                capture_output=True,
            ).returncode
            == 0
        )
    except OSError:  # no mount command here
        mounted = False
    try:
        yield (
            (
                lambda new: subprocess.run(
                    ["mount", "-o", f"remount,size={new}", str(folder)], check=True
                )
            )
            if mounted
            else None
        )
    finally:
        if mounted:
            subprocess.run(["umount", str(folder)], check=False)


def enospc_after(monkeypatch, calls: int):
    """Make the zarr store's writes fail with ENOSPC after ``calls`` successful ones (for
    machines where no tmpfs can be mounted); returns a function that lifts the fault."""
    import bayes_smlm.io.posterior_store as store_module

    real, count = store_module._to_zarr, [0]

    def failing(*args, **kwargs):
        count[0] += 1
        if count[0] > calls:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(store_module, "_to_zarr", failing)
    return lambda: monkeypatch.setattr(store_module, "_to_zarr", real)


def test_a_store_that_ran_out_of_space_resumes_to_the_whole_run(
    tmp_path, capsys, frames16, monkeypatch
):
    """The reproducer of issue 32: a grid run into a store whose disk fills after the first
    chunks, then the same command with space again. Before: 3 of 4 chunks 'already in the
    store', frames all NaN, exit 0. Now: the failure is one line that says how many chunks are
    kept; the rerun computes the rest; the store equals a run that never stopped. (The store
    checks its room before it is laid out, so a disk fills mid-run only when something else
    fills it: the fault is injected.)"""
    argv = ["posterior", str(frames16), "--method", "grid", "--chunk-frames", "4", "--quiet"]
    status, _, _ = run_cli(capsys, *argv, "--out", str(tmp_path / "whole.zarr"))
    assert status == 0
    whole = load_posterior(tmp_path / "whole.zarr")
    target = tmp_path / "q.zarr"
    lift = enospc_after(monkeypatch, 14)
    status, out, err = run_cli(capsys, *argv, "--out", str(target))
    assert_one_line_error(status, err, "No space left on device", "rerun the same command")
    kept = int(err.split(";")[1].split()[0])
    assert 1 <= kept < 4
    with pytest.raises(ConfigError, match="unfinished posterior store"):
        load_posterior(target)
    lift()
    status, out, err = run_cli(capsys, *argv, "--out", str(target))
    assert status == 0, err
    assert f"({4 - kept} computed in this process" in out
    resumed = load_posterior(target)
    for group in ("kde", "posterior", "observed_data"):
        for name, values in whole[group].dataset.data_vars.items():
            np.testing.assert_array_equal(resumed[group][name].values, values.values)


def test_a_store_too_large_for_its_disk_is_refused_in_one_line(
    tmp_path, capsys, frames16, monkeypatch
):
    """On a disk without room for the whole store, nothing is laid out: one line saying how much
    it needs; with room, the same command runs."""
    argv = ["posterior", str(frames16), "--method", "grid", "--chunk-frames", "4", "--quiet"]
    with small_disk(tmp_path / "disk", "300k") as grow:
        if grow is None:
            import bayes_smlm.io.atomic as atomic

            monkeypatch.setattr(atomic, "free_bytes", lambda folder: 300_000)
        target = tmp_path / "disk" / "q.zarr"
        status, _, err = run_cli(capsys, *argv, "--out", str(target))
        assert_one_line_error(status, err, "No space left on device", "needs about")
        assert not target.exists()
        grow("8M") if grow else monkeypatch.undo()
        status, out, err = run_cli(capsys, *argv, "--out", str(target))
        assert status == 0, err
        assert load_posterior(target)["kde"]["var"].shape[0] == 16


def test_done_flags_are_never_read_from_a_fill_value(tmp_path, isolated):
    """A chunk whose flag was never written is not done (the float flags' NaN fill read as
    True); a chunk whose data changed after its flag is computed again, with a warning."""
    import zarr

    from bayes_smlm.cluster.posterior import posterior_in_chunks
    from bayes_smlm.io.posterior_store import PROGRESS_GROUP

    batch = simulate(isolated, 6, 2)
    options = {"seed": 1, "fine": 61}
    path, computed = posterior_in_chunks(
        "grid", isolated, batch.adu, tmp_path / "s.zarr", options=options, chunk_frames=2
    )
    first = load_posterior(path)["kde"]["var"].values
    progress = zarr.open_group(str(path / PROGRESS_GROUP), mode="r+")
    assert progress["done"].dtype == np.int8 and list(progress["done"][:]) == [1, 1, 1]
    (path / PROGRESS_GROUP / "done" / "1").unlink()  # a flag whose write was lost: fill value
    kde_var = zarr.open_group(str(path / "kde"), mode="r+")["var"]
    kde_var[4] = 0.0  # and data that no longer match their digest
    with pytest.warns(UserWarning, match="chunk 2 .* does not match its digest"):
        path, computed = posterior_in_chunks(
            "grid", isolated, batch.adu, path, options=options, chunk_frames=2
        )
    assert computed == 2
    np.testing.assert_array_equal(load_posterior(path)["kde"]["var"].values, first)


def test_a_half_laid_out_store_is_laid_out_again(tmp_path, isolated, monkeypatch):
    """A store whose lay-out died half-way never appears at the store's path: the rerun lays it
    out again and finishes."""
    from bayes_smlm.cluster.posterior import posterior_in_chunks

    batch = simulate(isolated, 4, 3)
    lift = enospc_after(monkeypatch, 2)
    with pytest.raises(OutputError, match="No space left"):
        posterior_in_chunks(
            "grid", isolated, batch.adu, tmp_path / "h.zarr", options={"fine": 61}, chunk_frames=2
        )
    assert not (tmp_path / "h.zarr").exists()
    lift()
    path, computed = posterior_in_chunks(
        "grid", isolated, batch.adu, tmp_path / "h.zarr", options={"fine": 61}, chunk_frames=2
    )
    assert computed == 2 and load_posterior(path)["kde"]["var"].shape[0] == 4


def _hold_and_report(target, ready, release, answer):
    try:
        with hold_output(target):
            ready.set()
            release.wait(30)
        answer.put("held")
    except ConfigError as err:
        answer.put(str(err))


def test_a_second_writer_of_one_output_is_refused_in_one_line(tmp_path, capsys, frames_file):
    """Two runs into one output (two trainings into one new folder, two seeds into one store)
    both exited 0 and one result was lost; now the second is refused while the first runs,
    and a finished run leaves no lock behind."""
    context = multiprocessing.get_context("spawn")
    ready, release, answer = context.Event(), context.Event(), context.Queue()
    target = tmp_path / "runs" / "x"
    holder = context.Process(target=_hold_and_report, args=(target, ready, release, answer))
    holder.start()
    try:
        assert ready.wait(60)
        status, _, err = run_cli(
            capsys, "train-phi", "--task", "isolated", "--steps", "1", "--out", str(target)
        )
        assert_one_line_error(
            status, err, "argument --out:", "being written by another run", f"process {holder.pid}"
        )
        status, _, err = run_cli(
            capsys, "posterior", str(frames_file), "--method", "grid", "--out", str(target)
        )
        assert_one_line_error(status, err, "being written by another run")
    finally:
        release.set()
        holder.join(60)
    assert answer.get(timeout=10) == "held"
    assert not lock_path(target).exists()
    with hold_output(target):  # free again
        assert lock_path(target).exists()


def test_outputs_with_the_longest_legal_names_are_written(tmp_path, capsys):
    """A 252-character name failed: the atomic writer's temporary name passed 255 bytes."""
    out = tmp_path / ("a" * (NAME_MAX - 4) + ".npz")
    status, _, err = run_cli(
        capsys, "simulate", "--task", "isolated", "--frames", "1", "--seed", "0", "--out", str(out)
    )
    assert status == 0, err
    assert out.is_file() and len(lock_path(out).name.encode()) <= NAME_MAX


def test_a_study_folder_holds_one_run(tmp_path, capsys):
    """A study into a finished folder of another run replaces it whole; interrupted, it leaves
    the earlier run as it was; a folder that is not a study's is refused, not replaced."""
    import bayes_smlm.studies.forward_model as study

    out = tmp_path / "report"
    argv = ["study", "forward-model", "--preset", "smoke", "--out", str(out)]
    assert run_cli(capsys, *argv, "--seed", "3")[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert json.loads((out / "config.json").read_text())["seed"] == 3

    real = study.run

    def interrupted(preset, seed, out):
        real(preset=preset, seed=seed, out=out)
        raise KeyboardInterrupt

    study.run = interrupted
    try:
        status, _, err = run_cli(capsys, *argv, "--seed", "9")
    finally:
        study.run = real
    assert status == 130
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]

    assert run_cli(capsys, *argv, "--seed", "9")[0] == 0
    assert json.loads((out / "config.json").read_text())["seed"] == 9

    foreign = tmp_path / "my-data"
    foreign.mkdir()
    (foreign / "movie.tif").write_bytes(b"precious")
    status, _, err = run_cli(
        capsys, "study", "forward-model", "--preset", "smoke", "--out", str(foreign)
    )
    assert_one_line_error(status, err, "not a study's")
    assert (foreign / "movie.tif").read_bytes() == b"precious"


@pytest.mark.slow
def test_report_refuses_a_folder_of_two_runs_and_names_that_leave_it(tmp_path, capsys):
    out = tmp_path / "report"
    assert run_cli(capsys, "study", "calibration", "--preset", "smoke", "--out", str(out))[0] == 0
    metrics = json.loads((out / "metrics.json").read_text())
    bad = dict(metrics, provenance={**metrics["provenance"], "seed": 9})
    write_json(out / "metrics.json", bad)
    status, _, err = run_cli(capsys, "report", str(out))
    assert_one_line_error(status, err, "come from different runs", "seed")

    escaping = dict(metrics)
    escaping["methods"] = {
        "../../../x": next(iter(metrics["methods"].values())),
        **metrics["methods"],
    }
    write_json(out / "metrics.json", escaping)
    status, _, err = run_cli(capsys, "report", str(out))
    assert_one_line_error(status, err, "not a plain name")


def test_a_damaged_cache_entry_is_computed_again(isolated, reference_cache):
    from bayes_smlm.methods.reference import cached_reference

    batch = simulate(isolated, 2, 8)
    first = cached_reference(isolated, batch.adu, (8, 2), seed=0, fine=61)
    entries = sorted(reference_cache.glob("grid-*.nc"), key=os.path.getmtime)
    entry = entries[-1]
    entry.write_bytes(entry.read_bytes()[:200])  # truncated
    with pytest.warns(UserWarning, match="damaged"):
        again = cached_reference(isolated, batch.adu, (8, 2), seed=0, fine=61)
    np.testing.assert_array_equal(again.kde_var, first.kde_var)
    assert load_posterior(entry)["kde"]["var"].shape[0] == 2  # replaced by a good one


@pytest.mark.slow
def test_ctrl_c_of_a_run_on_dask_workers_is_one_line_and_it_resumes(tmp_path, isolated):
    """Ctrl-C reaches every process of the job: it exited 130 but each worker printed its
    KeyboardInterrupt traceback. Now the workers ignore it and this process closes them: one
    line; the rerun resumes to the run that was never stopped."""
    import signal
    import sys
    import time

    from bayes_smlm.io.posterior_store import read_done

    batch = simulate(isolated, 48, 9)
    frames = write_npz(
        tmp_path / "f.npz",
        adu=batch.adu,
        theta=batch.theta,
        kde=batch.kde,
        config=isolated.to_json(),
        seed=9,
    )
    store = tmp_path / "s.zarr"
    argv = [
        sys.executable,
        "-m",
        "bayes_smlm.cli.main",
        "posterior",
        str(frames),
        "--method",
        "grid",
        "--chunk-frames",
        "2",
        "--scheduler",
        "local:2",
        "--quiet",
        "--out",
        str(store),
    ]
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a job of its own, as a terminal runs it
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if store.exists() and read_done(store, 24).sum() >= 2:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == ["bayes-smlm posterior: interrupted"], err
    assert 2 <= read_done(store, 24).sum() < 24
    resumed = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert "already in the store" in resumed.stdout
    whole = load_posterior(store)
    from bayes_smlm.methods import get_method

    direct = get_method("grid")(isolated, batch.adu)  # here: another XLA device layout, so
    np.testing.assert_allclose(
        whole["kde"]["var"].values,
        direct.kde_var,  # not to the bit
        rtol=1e-4,
        atol=1e-10,
    )
