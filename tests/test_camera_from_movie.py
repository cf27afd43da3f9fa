"""``localize --camera from-movie``: offset and readout-variance maps estimated from a movie's
quiet pixels (hot pixels included), its refusals, and the calibration it reaches."""

import numpy as np
import pytest
from test_acquisition import maps_of
from test_cli import assert_one_line_error, run_cli

from bayes_smlm.acquisition.sample import MovieSettings, simulate_movie
from bayes_smlm.acquisition.scoring import match_movie
from bayes_smlm.acquisition.table import read_localizations


@pytest.fixture(scope="module")
def hot_movie(tmp_path_factory):
    """A sparse 32 × 32 movie with 5 % hot pixels, long enough for every pixel's statistics."""
    folder = tmp_path_factory.mktemp("hot")
    simulated = simulate_movie(
        MovieSettings(
            frames=80,
            height=32,
            width=32,
            emitters_per_frame=3,
            min_distance=6.0,
            hot_fraction=0.05,
        ),
        seed=61,
    )
    simulated.write(folder)
    return folder, simulated


def test_camera_from_movie_recovers_offsets_and_hot_pixels(hot_movie):
    """Offsets within 1.5 ADU (median over pixels; their spread is 3 ADU), hot pixels' readout
    variance within 25 % (median), and the gain stated as assumed, not estimated."""
    from bayes_smlm.acquisition.camera_from_movie import camera_from_movie
    from bayes_smlm.acquisition.movie import Movie
    from bayes_smlm.forward.tasks import get_task

    folder, simulated = hot_movie
    movie = Movie(folder / "movie.tif")
    task = get_task(
        "widefield",
        {
            "height": 32,
            "width": 32,
            "camera.offset": 100.0,
            "camera.gain": 2.0,
            "camera.readout_var": 4.0,
        },
    )
    estimated = camera_from_movie(movie, task)
    movie.close()
    assert np.median(np.abs(estimated.offset - simulated.offset)) < 1.5
    assert np.median(np.abs(simulated.offset - np.median(simulated.offset))) > 1.5
    hot = simulated.readout_var > 30 * np.median(simulated.readout_var)
    assert hot.sum() >= 20
    error = np.abs(estimated.readout_var[hot] / simulated.readout_var[hot] - 1)
    assert np.median(error) < 0.25
    assert "assumed: gain 2 ADU/photon" in estimated.summary()


def test_camera_from_movie_refuses_maps_it_would_replace(hot_movie, capsys):
    folder, _ = hot_movie
    status, _, err = run_cli(
        capsys,
        "localize",
        str(folder / "movie.tif"),
        *maps_of(folder),
        "--camera",
        "from-movie",
        "--out",
        str(folder / "x.csv"),
    )
    assert_one_line_error(status, err, "camera", "scalar")


@pytest.mark.slow
def test_localize_with_camera_from_movie_is_calibrated(hot_movie, capsys):
    """With only scalar camera values given, the maps estimated from the movie's quiet pixels
    give calibrated uncertainties (z SD within 0.1 of 1: ≈ 3 SE at 240 localizations); the
    scalars alone are measured beside them."""
    from bayes_smlm.cli.main import main

    folder, simulated = hot_movie
    scalars = [
        "--set",
        "camera.offset=100",
        "--set",
        "camera.gain=2",
        "--set",
        "camera.readout_var=4",
    ]
    z_sd = {}
    for mode in ("given", "from-movie"):
        out = folder / f"{mode}.csv"
        assert (
            main(
                [
                    "localize",
                    str(folder / "movie.tif"),
                    *scalars,
                    "--camera",
                    mode,
                    "--quiet",
                    "--out",
                    str(out),
                ]
            )
            == 0
        )
        table = read_localizations(out)
        nm = 108.3
        rows = {
            "frame": table["frame"].astype(int) - 1,
            "x": table["x [nm]"] / nm - 0.5,
            "y": table["y [nm]"] / nm - 0.5,
        }
        found, true = match_movie(rows, simulated.theta)
        error = (
            np.stack([rows["x"][found], rows["y"][found]], 1) - simulated.theta.reshape(-1, 2)[true]
        )
        sd = (
            np.stack([table["uncertainty_x [nm]"][found], table["uncertainty_y [nm]"][found]], 1)
            / nm
        )
        z_sd[mode] = float(np.std(error / sd))
    assert "camera from the movie" in capsys.readouterr().out
    assert 0.9 < z_sd["from-movie"] < 1.1, z_sd
