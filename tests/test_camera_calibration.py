"""`calibrate-camera`: per-pixel offset, readout variance and gain from dark and flat stacks,
against the maps the stacks were drawn with, and the one-line refusals of unusable stacks."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from test_cli import assert_one_line_error, run_cli

SHAPE = (48, 48)
LEVELS = (50.0, 150.0, 400.0, 1000.0, 2500.0)  # photons per pixel of the flats


def true_maps(rng: np.random.Generator):
    """sCMOS-like maps drawn here, independently of the package."""
    offset = 100.0 + 3.0 * rng.standard_normal(SHAPE)
    gain = 2.0 * (1.0 + 0.05 * rng.standard_normal(SHAPE))
    readout_var = 5.0 * rng.lognormal(0.0, 0.3, SHAPE)
    return offset, gain, readout_var


def stack(rng, maps, photons: float, frames: int) -> np.ndarray:
    """``ADU = g · Poisson(λ) + Normal(o, w²)`` (eq. 1), float32 frames."""
    offset, gain, readout_var = maps
    counts = rng.poisson(photons, (frames,) + SHAPE) if photons else 0.0
    noise = np.sqrt(readout_var) * rng.standard_normal((frames,) + SHAPE)
    return (gain * counts + offset + noise).astype(np.float32)


def write(path, frames) -> str:
    tifffile.imwrite(path, frames, photometric="minisblack")
    return str(path)


@pytest.fixture(scope="module")
def calibration(tmp_path_factory):
    rng = np.random.default_rng(2026)
    maps = true_maps(rng)
    folder = tmp_path_factory.mktemp("camera")
    dark = write(folder / "dark.tif", stack(rng, maps, 0.0, 200))
    flats = [
        write(folder / f"flat{k}.tif", stack(rng, maps, level, 100))
        for k, level in enumerate(LEVELS)
    ]
    return folder, maps, dark, flats


def test_maps_match_the_truth_within_their_standard_errors(calibration, capsys):
    folder, (offset, gain, readout_var), dark, flats = calibration
    out = folder / "maps"
    status, printed, err = run_cli(
        capsys, "calibrate-camera", "--dark", dark, "--flat", *flats, "--out", str(out)
    )
    assert status == 0, err
    assert "camera.gain=" in printed and "5 flat levels" in printed
    # 100 frames a level: a 6.4 % gain SE, which costs localize precision: the user is told,
    # with the frames per level that would bring it to 3.5 % (≈ 330)
    warning = next(line for line in printed.splitlines() if line.startswith("warning:"))
    frames = int(warning.split("record about ")[1].split()[0])
    assert "precision" in warning and 250 < frames < 450, warning
    found = {
        name: tifffile.imread(out / f"{name}.tif")
        for name in ("offset", "readout_var", "gain", "offset_se", "readout_var_se", "gain_se")
    }
    # and the value for localize --gain-se: the RMS relative SE of the gain map it wrote
    gain_se = float(printed.rsplit("--gain-se ", 1)[1].split()[0])
    assert gain_se == pytest.approx(
        np.sqrt(np.mean((found["gain_se"] / found["gain"]) ** 2)), abs=1e-4
    )
    # the bars where the frame counts allow them
    assert np.median(np.abs(found["offset"] - offset)) < 0.5  # ADU
    # each map's error is its stated standard error: z SD ≈ 1 over 2304 pixels (SE of an SD
    # there: 1.5 %), mean ≈ 0
    for name, truth in (("offset", offset), ("readout_var", readout_var), ("gain", gain)):
        z = (found[name] - truth) / found[f"{name}_se"]
        assert 0.9 < np.std(z) < 1.12, (name, np.std(z))
        assert abs(np.mean(z)) < 0.15, (name, np.mean(z))
    # what 200 dark frames and 5 × 100 flat frames can give per pixel (module docstring):
    # median |relative error| ≈ 0.674 × √(2/199) = 6.8 % for w², ≈ 4.3 % for g
    rel_var = np.median(np.abs(found["readout_var"] / readout_var - 1))
    rel_gain = np.median(np.abs(found["gain"] / gain - 1))
    assert 0.055 < rel_var < 0.08 and 0.03 < rel_gain < 0.055, (rel_var, rel_gain)


def test_unusable_stacks_are_refused_in_one_line(calibration, tmp_path, capsys):
    folder, maps, dark, flats = calibration
    rng = np.random.default_rng(5)
    short = write(tmp_path / "short.tif", stack(rng, maps, 0.0, 10))
    status, _, err = run_cli(
        capsys, "calibrate-camera", "--dark", short, "--flat", *flats, "--out", str(tmp_path / "a")
    )
    assert_one_line_error(status, err, "--dark", "10 frames", "at least 20")
    status, _, err = run_cli(
        capsys, "calibrate-camera", "--dark", dark, "--flat", flats[2], "--out", str(tmp_path / "b")
    )
    assert_one_line_error(status, err, "--flat", "two or more light levels")
    status, _, err = run_cli(
        capsys,
        "calibrate-camera",
        "--dark",
        dark,
        "--flat",
        dark,
        flats[1],
        "--out",
        str(tmp_path / "c"),
    )
    assert_one_line_error(status, err, "--flat", "no brighter than the dark frames")
    bright = np.minimum(stack(rng, maps, 40000.0, 30), 65535).astype(np.uint16)
    saturated = write(tmp_path / "saturated.tif", bright)
    status, _, err = run_cli(
        capsys,
        "calibrate-camera",
        "--dark",
        dark,
        "--flat",
        flats[0],
        saturated,
        "--out",
        str(tmp_path / "d"),
    )
    assert_one_line_error(status, err, "--flat", "saturated.tif", "saturated")
    assert not (tmp_path / "d").exists() or not list((tmp_path / "d").iterdir())
