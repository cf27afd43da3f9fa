"""localize / render / simulate-movie as a user runs them, and the pieces checked against
independent formulas and the truth."""

import numpy as np
import pytest
import tifffile
from scipy.ndimage import convolve, gaussian_filter
from test_cli import assert_one_line_error, run_cli

from bayes_smlm.acquisition.render import render
from bayes_smlm.acquisition.sample import MovieSettings, simulate_movie
from bayes_smlm.acquisition.scoring import match_movie
from bayes_smlm.acquisition.spots import _filtered_variance
from bayes_smlm.acquisition.table import read_localizations

SMALL = ["--frames", "10", "--size", "32", "--emitters", "3", "--seed", "5"]


@pytest.fixture(scope="module")
def small_movie(tmp_path_factory):
    folder = tmp_path_factory.mktemp("movie")
    from bayes_smlm.cli.main import main

    assert main(["simulate-movie", *SMALL, "--out", str(folder)]) == 0
    return folder


def maps_of(folder):
    return [
        arg
        for name in ("offset", "gain", "readout_var")
        for arg in ("--set", f"camera.{name}={folder / (name + '.tif')}")
    ]


@pytest.fixture(scope="module")
def localized(small_movie):
    from bayes_smlm.cli.main import main

    out = small_movie / "locs.csv"
    assert (
        main(
            [
                "localize",
                str(small_movie / "movie.tif"),
                *maps_of(small_movie),
                "--quiet",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    return out


def test_simulated_movie_is_a_uint16_tiff_with_its_maps(small_movie):
    movie = tifffile.imread(small_movie / "movie.tif")
    assert movie.dtype == np.uint16 and movie.shape == (10, 32, 32)
    truth = np.load(small_movie / "truth.npz")
    theta = truth["theta"]
    assert theta.shape == (10, 3, 2)
    distances = np.linalg.norm(theta[:, :, None] - theta[:, None], axis=-1)
    assert distances[:, ~np.eye(3, dtype=bool)].min() >= 6.0
    assert tifffile.imread(small_movie / "gain.tif").shape == (32, 32)


def test_localize_tiff_to_csv_in_thunderstorm_conventions(small_movie, localized):
    table = read_localizations(localized)
    for column in (
        "id",
        "frame",
        "x [nm]",
        "y [nm]",
        "intensity [photon]",
        "offset [photon]",
        "uncertainty_x [nm]",
        "uncertainty_y [nm]",
    ):
        assert column in table
    assert localized.read_text().splitlines()[0].startswith('"id","frame","x [nm]"')
    truth = np.load(small_movie / "truth.npz")
    nm = 108.3
    # frames count from 1; x, y from the image's top-left corner (pixel centres at ½ px)
    rows = {
        "frame": table["frame"].astype(int) - 1,
        "x": table["x [nm]"] / nm - 0.5,
        "y": table["y [nm]"] / nm - 0.5,
    }
    found, true = match_movie(rows, truth["theta"], tolerance=0.5)
    assert len(found) == len(table["x [nm]"]) == truth["theta"].shape[0] * 3
    error = np.stack([rows["x"][found], rows["y"][found]], 1) - truth["theta"].reshape(-1, 2)[true]
    sd = np.stack([table["uncertainty_x [nm]"][found], table["uncertainty_y [nm]"][found]], 1) / nm
    # 30 emitters: |z| beyond 4.5 SDs has probability < 1e-4 for a calibrated uncertainty
    assert np.abs(error / sd).max() < 4.5
    ratio = table["intensity [photon]"][found] / truth["i0"].reshape(-1)[true]
    assert 0.9 < np.median(ratio) < 1.1
    assert np.allclose(table["offset [photon]"], 10.0, atol=3.0)


def test_localize_refuses_camera_maps_of_another_shape(small_movie, tmp_path, capsys):
    tifffile.imwrite(tmp_path / "offset.tif", np.full((16, 16), 100.0, np.float32))
    status, _, err = run_cli(
        capsys,
        "localize",
        str(small_movie / "movie.tif"),
        "--set",
        f"camera.offset={tmp_path / 'offset.tif'}",
        "--out",
        str(tmp_path / "l.csv"),
    )
    assert_one_line_error(status, err, "camera.offset", "(32, 32)", "(16, 16)")
    assert not (tmp_path / "l.csv").exists()


@pytest.mark.parametrize(
    "name, content",
    [("frames.png", b"\x89PNG not a movie"), ("movie.tif", b"this is not a TIFF file at all")],
)
def test_localize_refuses_what_is_not_a_tiff_movie(tmp_path, capsys, name, content):
    (tmp_path / name).write_bytes(content)
    status, _, err = run_cli(
        capsys, "localize", str(tmp_path / name), "--out", str(tmp_path / "l.csv")
    )
    assert_one_line_error(status, err, "MOVIE", name)


def test_localize_reads_compressed_tiffs_page_by_page(small_movie, localized, tmp_path, capsys):
    movie = tifffile.imread(small_movie / "movie.tif")
    tifffile.imwrite(tmp_path / "packed.tif", movie, compression="zlib")
    status, out, err = run_cli(
        capsys,
        "localize",
        str(tmp_path / "packed.tif"),
        *maps_of(small_movie),
        "--quiet",
        "--chunk-frames",
        "3",
        "--out",
        str(tmp_path / "l.csv"),
    )
    assert status == 0, err
    packed, plain = read_localizations(tmp_path / "l.csv"), read_localizations(localized)
    assert packed.keys() == plain.keys()
    for column in set(plain) - {"window"}:  # windows are numbered in reading order
        # other batch sizes round float32 sums differently: 1e-4 at most
        np.testing.assert_allclose(packed[column], plain[column], rtol=1e-4, atol=1e-6)


def test_render_writes_image_and_sd_map(localized, tmp_path, capsys):
    status, out, err = run_cli(
        capsys,
        "render",
        str(localized),
        "--size-nm",
        "3465.6",
        "3465.6",
        "--out",
        str(tmp_path / "r"),
    )
    assert status == 0, err
    image = tifffile.imread(tmp_path / "r" / "image.tif")
    sd = tifffile.imread(tmp_path / "r" / "sd.tif")
    assert image.shape == sd.shape == (347, 347)
    assert (tmp_path / "r" / "image.png").stat().st_size > 0
    assert (tmp_path / "r" / "sd.png").stat().st_size > 0
    assert image.max() > 0.5 and (sd >= 0).all() and sd.max() > 0


def test_render_frames_the_movies_field_of_view(localized, tmp_path, capsys):
    """Without --size-nm the image is the movie's field of view (32 × 32 px of 108.3 nm, from
    the file `localize` writes beside the CSV), not the box of the outermost localization;
    a CSV without that file gets the box and a note saying so."""
    status, out, err = run_cli(capsys, "render", str(localized), "--out", str(tmp_path / "r"))
    assert status == 0, err
    assert tifffile.imread(tmp_path / "r" / "image.tif").shape == (347, 347)
    assert "no field of view" not in out
    alone = tmp_path / "alone.csv"
    alone.write_text(localized.read_text())
    status, out, err = run_cli(capsys, "render", str(alone), "--out", str(tmp_path / "a"))
    assert status == 0, err
    assert "no field of view beside alone.csv" in out


def test_render_moments_match_monte_carlo():
    """The closed-form posterior mean and variance of a kernel at every pixel against draws of
    θ from the same correlated Gaussian."""
    rng = np.random.default_rng(0)
    x, y, sx, sy, rho = 50.0, 42.0, 8.0, 5.0, 0.6
    rendering = render([x], [y], [sx], [sy], [rho], pixel_nm=4.0, sigma_nm=6.0, shape=(25, 25))
    cov = np.array([[sx * sx, rho * sx * sy], [rho * sx * sy, sy * sy]])
    draws = rng.multivariate_normal([x, y], cov, size=200_000)
    cy, cx = (np.mgrid[0:25, 0:25] + 0.5) * 4.0
    values = np.exp(
        -((cx[None] - draws[:, 0, None, None]) ** 2 + (cy[None] - draws[:, 1, None, None]) ** 2)
        / (2 * 36.0)
    )
    mean, var = values.mean(0), values.var(0)
    mcse = values.std(0) / np.sqrt(len(draws))
    assert np.all(np.abs(rendering.mean - mean) <= 5 * mcse + 1e-5)
    var_mcse = ((values - mean) ** 2).std(0) / np.sqrt(len(draws))
    assert np.all(np.abs(rendering.sd**2 - var) <= 5 * var_mcse + 1e-5)


def test_filtered_variance_equals_the_squared_kernel_convolution():
    sigma = 0.92
    impulse = np.zeros((31, 31))
    impulse[15, 15] = 1
    weights = gaussian_filter(impulse, sigma, mode="constant") - gaussian_filter(
        impulse, 3 * sigma, mode="constant"
    )
    variance = np.random.default_rng(1).uniform(1, 50, (2, 40, 40))
    exact = convolve(variance, (weights**2)[None], mode="nearest")
    assert np.allclose(_filtered_variance(variance, sigma), exact, rtol=0.01)


@pytest.mark.slow
def test_localize_with_nuts_writes_diagnostics_and_agrees_with_laplace(
    small_movie, localized, tmp_path, capsys
):
    """``--method nuts`` through the CLI: the CSV gains r_hat, ess_bulk and divergences; every
    localization passes R-hat ≤ 1.01 on these bright, well-separated spots; the posterior means
    lie within ½ SD of the Laplace modes and the SDs agree within 10 %. 1000 draws per chain: with
    400, R-hat's own sampling noise reaches 1.01 on converged chains (seen: 1.011 on 1 of 30)."""
    out = tmp_path / "nuts.csv"
    status, stdout, err = run_cli(
        capsys,
        "localize",
        str(small_movie / "movie.tif"),
        *maps_of(small_movie),
        "--method",
        "nuts",
        "--draws",
        "1000",
        "--quiet",
        "--out",
        str(out),
    )
    assert status == 0, err
    nuts, laplace = read_localizations(out), read_localizations(localized)
    for column in ("r_hat", "ess_bulk", "divergences"):
        assert column in nuts and column not in laplace
    assert len(nuts["x [nm]"]) == len(laplace["x [nm]"])
    assert np.all(nuts["r_hat"] <= 1.01) and np.all(nuts["divergences"] == 0)
    order = [np.lexsort((t["x [nm]"], t["frame"])) for t in (nuts, laplace)]
    for axis in ("x", "y"):
        a, b = nuts[f"{axis} [nm]"][order[0]], laplace[f"{axis} [nm]"][order[1]]
        sa, sb = (t[f"uncertainty_{axis} [nm]"][o] for t, o in zip((nuts, laplace), order))
        assert np.all(np.abs(a - b) < 0.5 * sb)
        assert np.all(np.abs(sa / sb - 1) < 0.10), np.abs(sa / sb - 1).max()


@pytest.mark.parametrize(
    "option, value, words",
    [
        ("--method", "gibbs", ["--method", "laplace", "nuts"]),
        ("--chains", "1", ["--chains", ">= 2"]),
        ("--residual-passes", "-1", ["--residual-passes", ">= 0"]),
        ("--gain-se", "1.5", ["--gain-se", "[0, 1)"]),
    ],
)
def test_localize_refuses_bad_sampler_options(small_movie, tmp_path, capsys, option, value, words):
    status, _, err = run_cli(
        capsys,
        "localize",
        str(small_movie / "movie.tif"),
        option,
        value,
        "--out",
        str(tmp_path / "l.csv"),
    )
    assert_one_line_error(status, err, *words)


def test_localize_refuses_gain_se_with_nuts(small_movie, tmp_path, capsys):
    """NUTS samples a likelihood that treats the gain as known: --gain-se is refused with it,
    not silently ignored."""
    status, _, err = run_cli(
        capsys,
        "localize",
        str(small_movie / "movie.tif"),
        "--gain-se",
        "0.05",
        "--method",
        "nuts",
        "--out",
        str(tmp_path / "l.csv"),
    )
    assert_one_line_error(status, err, "--gain-se", "Laplace", "nuts")


def test_localize_writes_each_rows_probability_and_misfit(localized):
    """Every row carries P(N ≥ k | x) of its window's count (kept rows: ≥ the default 0.5) and
    the window's misfit test; on a movie of the model's own PSF none is a misfit."""
    table = read_localizations(localized)
    assert np.all((table["p_exists"] >= 0.5) & (table["p_exists"] <= 1.0))
    assert not table["misfit"].astype(bool).any()


@pytest.mark.slow
def test_spots_wider_than_the_psf_are_misfits_and_right_ones_are_not(tmp_path, capsys):
    """A movie imaged with a PSF 1.5× wider than the task's: ≥ 90 % of the rows `misfit` (a
    wide spot is fitted by a few narrow emitters, each with real evidence — the χ² test alone
    misses most); the same sample with the task's PSF: none."""
    from bayes_smlm.cli.main import main

    fractions = {}
    for label, sigma in (("right", 0.92), ("wide", 1.38)):
        simulated = simulate_movie(
            MovieSettings(
                frames=20,
                height=32,
                width=32,
                emitters_per_frame=3,
                min_distance=6.0,
                sigma_psf=sigma,
            ),
            seed=44,
        )
        folder = tmp_path / label
        simulated.write(folder)
        out = folder / "locs.csv"
        assert (
            main(
                [
                    "localize",
                    str(folder / "movie.tif"),
                    *maps_of(folder),
                    "--quiet",
                    "--out",
                    str(out),
                ]
            )
            == 0
        )
        fractions[label] = read_localizations(out)["misfit"].astype(bool).mean()
    assert fractions["wide"] >= 0.9 and fractions["right"] == 0.0, fractions
