"""Task configs: defaults, overrides, maps, JSON round trip, and the errors users see."""

from __future__ import annotations

import numpy as np
import pytest

from bayes_smlm.errors import ConfigError
from bayes_smlm.forward.config import parse_override, task_from_json, with_overrides
from bayes_smlm.forward.tasks import get_task, list_tasks


def test_registry_has_the_built_in_tasks_with_design_defaults():
    assert {"isolated", "paper"} <= set(list_tasks())
    t = get_task("paper")
    assert t.prior.n_emitters == 10 and t.prior.radius == 7.0 and t.prior.i0 == 200.0
    assert t.optics.sigma_psf == 0.92 and t.optics.sigma_kde == 1.5 and t.optics.upsampling == 4
    assert t.camera.offset == 100.0 and t.camera.gain == 1.0 and t.camera.readout_var == 5.0
    assert t.optics.pixel_size_nm == 108.3 and t.centre == (9.5, 9.5) and t.hr_shape == (80, 80)
    assert get_task("isolated").prior.n_emitters == 1


def test_every_constant_is_overridable_by_flat_or_dotted_key():
    t = get_task(
        "paper",
        {"sigma_kde": 3.0, "camera.gain": 2.5, "height": 32, "width": 24, "i0_range": (10.0, 90.0)},
    )
    assert t.optics.sigma_kde == 3.0 and t.camera.gain == 2.5 and t.shape == (32, 24)
    assert t.prior.i0_range == (10.0, 90.0) and t.hr_shape == (128, 96)


def test_json_round_trip_keeps_maps(tmp_path):
    gain = np.linspace(0.5, 2.0, 400).reshape(20, 20)
    t = get_task("isolated", {"gain": gain})
    back = task_from_json(t.to_json())
    assert back == t
    np.testing.assert_array_equal(back.camera.gain, gain)
    assert not back.camera.gain.flags.writeable


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("i0", -5.0, r"prior.i0: must be in \(0, 1.67772e\+07\] \(got -5\)"),
        ("sigma_psf", 0.0, r"optics.sigma_psf: must be in \(0, 50\] \(got 0\)"),
        ("sigma_kde", -1.0, r"optics.sigma_kde: must be in \(0, 200\]"),
        ("readout_var", -0.1, r"camera.readout_var: must be in \[0, 1.67772e\+07\]"),
        ("gain", 0.0, r"camera.gain: must be in \(0, 65536\]"),
        # what float32 frames and likelihoods cannot hold (they saturated at 2^31 or became inf)
        ("i0", 1e308, r"prior.i0: must be in \(0, 1.67772e\+07\] \(got 1e\+308\)"),
        ("background", 1e30, r"prior.background: must be in \[0, 1.67772e\+07\]"),
        ("readout_var", 1e30, r"camera.readout_var: must be in \[0, 1.67772e\+07\]"),
        ("gain", np.full((20, 20), 1e30), r"camera.gain: map values must be in \(0, 65536\]"),
        ("offset", -1e30, r"camera.offset: must be in \[-1.67772e\+07, 1.67772e\+07\]"),
        ("n_emitters", 2.5, r"prior.n_emitters: must be an integer"),
        ("radius", 11.0, r"prior.radius: must be in \(0, 10\]"),
        ("i0", float("nan"), r"prior.i0: must be finite"),
        ("upsampling", 0, r"optics.upsampling: must be in \[1, 16\]"),
        ("i0_range", (5.0, 1.0), r"prior.i0_range: needs low < high"),
    ],
)
def test_out_of_range_values_name_the_argument(key, value, message):
    with pytest.raises(ConfigError, match=message):
        get_task("isolated", {key: value})


def test_map_errors_name_the_argument_and_the_problem():
    bad = np.ones((20, 20))
    bad[3, 4] = np.nan
    with pytest.raises(
        ConfigError, match=r"camera.gain: map has a non-finite value at \(row, col\) = \(3, 4\)"
    ):
        get_task("isolated", {"gain": bad})
    with pytest.raises(
        ConfigError,
        match=r"camera.offset: map must have the frame's shape \(20, 20\) \(got \(10, 10\)\)",
    ):
        get_task("isolated", {"offset": np.zeros((10, 10))})
    neg = np.full((20, 20), 2.0)
    neg[0, 1] = -1.0
    with pytest.raises(
        ConfigError, match=r"camera.readout_var: map values must be in \[0, 1.67772e\+07\]"
    ):
        get_task("isolated", {"readout_var": neg})


def test_unknown_task_and_unknown_key():
    with pytest.raises(
        ConfigError, match=r"argument task: unknown task 'nope'; choose from isolated, paper"
    ):
        get_task("nope")
    with pytest.raises(ConfigError, match=r"argument set: unknown key 'gian'"):
        with_overrides(get_task("isolated"), {"gian": 2.0})


def test_parse_override_reads_numbers_ranges_and_map_files(tmp_path):
    assert parse_override("i0=500") == ("i0", 500.0)
    assert parse_override("prior.i0_range=10,90") == ("prior.i0_range", (10.0, 90.0))
    path = tmp_path / "gain.npy"
    np.save(path, np.full((20, 20), 1.5))
    key, arr = parse_override(f"gain={path}")
    assert key == "gain" and arr.shape == (20, 20)
    import tifffile

    tif = tmp_path / "offset.tif"
    tifffile.imwrite(tif, np.full((20, 20), 98.0, np.float32))
    assert parse_override(f"offset={tif}")[1].mean() == 98.0
    with pytest.raises(ConfigError, match="map file not found"):
        parse_override("gain=missing.npy")
    with pytest.raises(ConfigError, match=r"i0: must be a number \(got 'abc'\)"):
        parse_override("i0=abc")
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_override("i0")
