"""Chunked runs: per-frame seeds, zarr posterior stores that resume, Dask workers that give the
single-process numbers (``--scheduler``)."""

from __future__ import annotations

import numpy as np
import pytest
from test_cli import assert_one_line_error, run_cli

from bayes_smlm.errors import ConfigError
from bayes_smlm.forward.simulate import simulate
from bayes_smlm.io.posteriors import load_posterior, to_datatree


def assert_same_posterior(expected, actual, skip=()):
    """Every variable of every group bitwise equal (settings and timing aside)."""
    assert sorted(expected.children) == sorted(actual.children)
    for group in expected.children:
        for name, var in expected[group].data_vars.items():
            if (group, name) in skip:
                continue
            np.testing.assert_array_equal(
                actual[group][name].values, var.values, err_msg=f"{group}/{name}"
            )
    assert actual.attrs["method"] == expected.attrs["method"]


def test_frame_keys_of_a_shard_are_the_whole_runs():
    from bayes_smlm.methods.batching import frame_keys

    whole = frame_keys(7, 10)
    np.testing.assert_array_equal(frame_keys(7, 4, first_frame=6), whole[6:])
    assert not np.array_equal(frame_keys(8, 4, first_frame=6), whole[6:])
    with pytest.raises(ConfigError, match="first_frame"):
        frame_keys(7, 4, first_frame=-1)


def test_batches_never_shrink_to_one_frame_per_device():
    """XLA compiles a batch of one into other arithmetic: a frame's KDE moments must be the
    same alone and among others (bitwise), which is what chunked runs rely on."""
    from bayes_smlm.forward.tasks import get_task
    from bayes_smlm.methods.batching import map_frame_batches
    from bayes_smlm.methods.pushforward import kde_moments

    for batch, n, devices, expected in (
        (32, 1, 1, [2]),
        (32, 7, 1, [7]),
        (1, 3, 2, [2, 2]),
        (16, 1, 2, [4]),
        (4, 1, 4, [4]),
        (64, 100, 1, [64, 64]),
    ):
        seen = []
        out = map_frame_batches(
            lambda a: seen.append(len(a)) or a + 1, (np.arange(n),), batch, multiple_of=devices
        )
        assert seen == expected and np.array_equal(out, np.arange(n) + 1)
    task = get_task("isolated")
    draws = 10 + 0.3 * np.random.default_rng(0).standard_normal((5, 400, 1, 2))
    mean, var = kde_moments(draws, task)
    for i in range(5):
        one_mean, one_var = kde_moments(draws[i : i + 1], task)
        np.testing.assert_array_equal(one_mean[0], mean[i])
        np.testing.assert_array_equal(one_var[0], var[i])


def test_a_chunked_grid_run_is_the_whole_run_and_resumes(tmp_path, isolated):
    """In this process: chunks of 2 frames give the one-call posterior bitwise; a store with one
    chunk written (a run that stopped) computes only the others; other options are refused."""
    from bayes_smlm.cluster.posterior import posterior_in_chunks, run_chunk
    from bayes_smlm.io.posterior_store import PosteriorStore, run_identity
    from bayes_smlm.methods import get_method

    batch = simulate(isolated, 5, 11)
    options = {"seed": 4, "fine": 61}
    whole = get_method("grid")(isolated, batch.adu, theta_true=batch.theta, **options)
    path, computed = posterior_in_chunks(
        "grid",
        isolated,
        batch.adu,
        tmp_path / "a.zarr",
        options=options,
        chunk_frames=2,
        theta_true=batch.theta,
    )
    assert computed == 3
    stored = load_posterior(path)
    assert_same_posterior(to_datatree(whole), stored)
    assert float(stored.attrs["seconds"]) > 0

    identity = run_identity("grid", options, batch.adu, isolated.to_json(), 2)
    store = PosteriorStore.open(tmp_path / "b.zarr", identity)
    store.write(
        1,
        to_datatree(
            run_chunk("grid", isolated.to_json(), batch.adu[2:4], batch.theta[2:4], options, 2)
        ),
    )
    with pytest.raises(ConfigError, match="unfinished posterior store .1 of 3 chunks"):
        load_posterior(tmp_path / "b.zarr")
    path, computed = posterior_in_chunks(
        "grid",
        isolated,
        batch.adu,
        tmp_path / "b.zarr",
        options=options,
        chunk_frames=2,
        theta_true=batch.theta,
    )
    assert computed == 2
    assert_same_posterior(to_datatree(whole), load_posterior(path))
    with pytest.raises(ConfigError, match="other options"):
        posterior_in_chunks(
            "grid",
            isolated,
            batch.adu,
            tmp_path / "b.zarr",
            options={**options, "seed": 5},
            chunk_frames=2,
        )
    with pytest.raises(ConfigError, match="other chunk_frames"):
        posterior_in_chunks(
            "grid", isolated, batch.adu, tmp_path / "b.zarr", options=options, chunk_frames=3
        )


def test_chunked_ddpm_draws_what_one_call_draws(isolated):
    """Ψ's per-(frame, sample) seeds follow the frame's index in the run, not its place in a
    chunk (with as many samples per UNet call as a frame has, as by default, so that the calls
    of a chunk are the calls of the whole run). NUTS: the slow LocalCluster test."""
    from bayes_smlm.methods import get_method

    batch = simulate(isolated, 3, 12)
    options = {"seed": 2, "samples": 3, "steps": 2, "batch_size": 3}
    run = get_method("ddpm")
    whole = run(isolated, batch.adu, **options)
    parts = [run(isolated, batch.adu[a:b], first_frame=a, **options) for a, b in ((0, 1), (1, 3))]
    for name in ("kde_mean", "kde_var"):
        np.testing.assert_array_equal(
            np.concatenate([getattr(p, name) for p in parts]), getattr(whole, name)
        )
    shifted = run(isolated, batch.adu[1:3], **options)  # the same frames seeded as frames 0, 1
    assert not np.array_equal(shifted.kde_var, whole.kde_var[1:])


def test_posterior_chunk_errors_are_one_line(tmp_path, capsys, frames_file):
    status, _, err = run_cli(
        capsys,
        "posterior",
        str(frames_file),
        "--method",
        "grid",
        "--scheduler",
        "local:2",
        "--out",
        str(tmp_path / "p.nc"),
    )
    assert_one_line_error(status, err, "--scheduler", "FILE.zarr")
    status, _, err = run_cli(
        capsys,
        "posterior",
        str(frames_file),
        "--method",
        "grid",
        "--scheduler",
        "local:0",
        "--out",
        str(tmp_path / "p.zarr"),
    )
    assert_one_line_error(status, err, "--scheduler", "1 <= N <= 256")
    status, _, err = run_cli(
        capsys,
        "posterior",
        str(frames_file),
        "--method",
        "laplace",
        "--out",
        str(tmp_path / "p.zarr"),
    )
    assert_one_line_error(status, err, "--method", "first_frame", ".nc")
    (tmp_path / "stranger.zarr").mkdir()
    (tmp_path / "stranger.zarr" / "notes.txt").write_text("mine")
    status, _, err = run_cli(
        capsys,
        "posterior",
        str(frames_file),
        "--method",
        "grid",
        "--out",
        str(tmp_path / "stranger.zarr"),
    )
    assert_one_line_error(status, err, "--out", "not a bayes-smlm posterior store")
    assert (tmp_path / "stranger.zarr" / "notes.txt").read_text() == "mine"


def test_an_unreachable_scheduler_is_one_line(monkeypatch):
    from bayes_smlm.cluster import client as cluster_client

    monkeypatch.setattr(cluster_client, "CONNECT_TIMEOUT_S", 2)
    with pytest.raises(ConfigError, match="no Dask scheduler answered at tcp://127.0.0.1:9"):
        with cluster_client.dask_client("tcp://127.0.0.1:9"):
            pass


def test_two_local_workers_write_the_single_process_posterior(tmp_path, capsys, frames_file):
    """``posterior --scheduler local:2 --out F.zarr`` (a two-worker LocalCluster) stores the
    numbers of ``posterior --out F.nc`` in this process; a rerun finds every chunk done."""
    args = ["posterior", str(frames_file), "--method", "grid", "--seed", "3", "--quiet"]
    assert run_cli(capsys, *args, "--out", str(tmp_path / "one.nc"))[0] == 0
    status, out, err = run_cli(
        capsys,
        *args,
        "--scheduler",
        "local:2",
        "--chunk-frames",
        "1",
        "--out",
        str(tmp_path / "two.zarr"),
    )
    assert status == 0, err
    assert "2 frames in 2 chunks (2 computed on local:2)" in out
    assert_same_posterior(
        load_posterior(tmp_path / "one.nc"), load_posterior(tmp_path / "two.zarr")
    )
    status, out, _ = run_cli(
        capsys, *args, "--chunk-frames", "1", "--out", str(tmp_path / "two.zarr")
    )
    assert status == 0 and "(0 computed in this process, 2 already in the store)" in out


@pytest.mark.slow
def test_two_local_workers_reproduce_a_localize_run_with_nuts_windows(tmp_path, capsys):
    """A movie's localizations with NUTS windows (draws chaotic in the last bit) are the single
    process's on a two-worker LocalCluster. (``posterior --method nuts`` on workers against one
    process: the bench-dask smoke test.)"""
    movie = tmp_path / "movie"
    assert (
        run_cli(
            capsys,
            "simulate-movie",
            "--frames",
            "12",
            "--size",
            "24",
            "--emitters",
            "2",
            "--out",
            str(movie),
        )[0]
        == 0
    )
    locs = [
        "localize",
        str(movie / "movie.tif"),
        "--method",
        "nuts",
        "--draws",
        "60",
        "--warmup",
        "40",
        "--chunk-frames",
        "4",
        "--quiet",
    ]
    assert run_cli(capsys, *locs, "--out", str(tmp_path / "one.csv"))[0] == 0
    status, _, err = run_cli(
        capsys, *locs, "--scheduler", "local:2", "--out", str(tmp_path / "two.csv")
    )
    assert status == 0, err
    assert (tmp_path / "one.csv").read_text() == (tmp_path / "two.csv").read_text()


def test_a_reused_sampler_program_draws_what_a_fresh_one_draws(isolated):
    """Chunks of a run reuse the traced sampler (tracing NUTS costs seconds per chunk): the
    draws are those of a fresh trace, and other settings get their own program."""
    from bayes_smlm.methods import get_method, mcmc

    batch = simulate(isolated, 2, 14)
    options = {"seed": 1, "draws": 50, "steps": 300, "burn_in": 100, "chains": 2}
    mcmc._PROGRAMS.clear()
    first = get_method("rwmh")(isolated, batch.adu, **options)
    assert len(mcmc._PROGRAMS) == 1
    again = get_method("rwmh")(isolated, batch.adu, **options)
    np.testing.assert_array_equal(again.theta, first.theta)
    wider = get_method("rwmh")(isolated, batch.adu, **{**options, "proposal_var": 0.06})
    assert len(mcmc._PROGRAMS) == 2 and not np.array_equal(wider.theta, first.theta)
    mcmc._PROGRAMS.clear()
    fresh = get_method("rwmh")(isolated, batch.adu, **options)
    np.testing.assert_array_equal(fresh.theta, first.theta)
