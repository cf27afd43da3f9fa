"""Checkpoints whose config.json was edited or damaged: one line naming the checkpoint and what
does not fit, before torch or diffusers sees it (the weights' own checks — safetensors, NaN,
SHA-256 — are tests of test_unusable_weights.py)."""

from __future__ import annotations

import json
import shutil

import pytest
from test_cli import assert_one_line_error, run_cli

from bayes_smlm.surrogates.checkpoint import SHIPPED_DIR


@pytest.fixture
def copies(tmp_path):
    """Copies of the shipped `isolated` φ and Ψ (Ψ names its φ as ../phi-isolated)."""
    for name in ("phi-isolated", "psi-isolated"):
        shutil.copytree(SHIPPED_DIR / name, tmp_path / name)
    return tmp_path


def edit(path, change):
    config = json.loads(path.read_text())
    change(config)
    path.write_text(json.dumps(config))


def set_in(section, key, value):
    return lambda config: config[section].__setitem__(key, value)


@pytest.mark.parametrize(
    "change, message",
    [
        (set_in("architecture", "context_channels", -4), "context_channels must be an integer in"),
        (set_in("architecture", "context_channels", "64"), "context_channels must be an integer"),
        (set_in("architecture", "input_scale", None), "input_scale must be a finite number"),
        (set_in("architecture", "wings", 2), "unknown fields ['wings']"),
        (set_in("architecture", "up_channels", [32]), "up_channels"),
        # a network of ≈ 3e9 parameters: torch asked for hundreds of GB before
        (set_in("architecture", "context_channels", 8192), "parameters (at most 1e+09)"),
        # every field valid, the weights of another width: missing / reshaped tensors
        (set_in("architecture", "context_channels", 16), "its weights do not fit the network"),
        (set_in("architecture", "refine_blocks", 5), "missing"),
        (lambda config: config.pop("architecture"), "architecture must be a JSON object"),
    ],
)
def test_a_tampered_phi_config_is_refused_in_one_line(copies, frames_file, capsys, change, message):
    edit(copies / "phi-isolated" / "config.json", change)
    status, _, err = run_cli(
        capsys,
        "detect-phi",
        str(frames_file),
        "--checkpoint",
        str(copies / "phi-isolated"),
        "--out",
        str(copies / "d.csv"),
    )
    assert_one_line_error(status, err, "argument --checkpoint:", "phi-isolated", message)


@pytest.mark.parametrize(
    "where, change, message",
    [
        (
            "scheduler/scheduler_config.json",
            lambda config: config.__setitem__("beta_schedule", "nonsense"),
            "not a loadable diffusers",
        ),
        (
            "unet/config.json",
            lambda config: config.__setitem__("block_out_channels", [4096, 8192, 8192]),
            "parameters (at most 1e+09)",
        ),
        (
            "unet/config.json",
            lambda config: config.__setitem__("layers_per_block", 3),
            "its weights do not fit the network",
        ),
        (
            "config.json",
            lambda config: config["recalibration"].__setitem__(
                "sd_scale", [float("nan")] * len(config["recalibration"]["sd_scale"])
            ),
            "its recalibration needs increasing finite edges",
        ),
    ],
)
def test_a_tampered_psi_is_refused_in_one_line(copies, frames_file, capsys, where, change, message):
    edit(copies / "psi-isolated" / where, change)
    status, _, err = run_cli(
        capsys,
        "posterior",
        str(frames_file),
        "--method",
        "ddpm",
        "--recalibrate",
        "--samples",
        "4",
        "--checkpoint",
        str(copies / "psi-isolated"),
        "--quiet",
        "--out",
        str(copies / "p.nc"),
    )
    assert_one_line_error(status, err, "argument --checkpoint:", message)


def test_the_untampered_copies_load(copies, frames_file, capsys):
    """The copies themselves are fine: what the tests above refuse is the edit."""
    status, _, err = run_cli(
        capsys,
        "detect-phi",
        str(frames_file),
        "--checkpoint",
        str(copies / "phi-isolated"),
        "--out",
        str(copies / "d.csv"),
    )
    assert status == 0, err
    status, _, err = run_cli(
        capsys,
        "posterior",
        str(frames_file),
        "--method",
        "ddpm",
        "--recalibrate",
        "--samples",
        "4",
        "--checkpoint",
        str(copies / "psi-isolated"),
        "--quiet",
        "--out",
        str(copies / "p.nc"),
    )
    assert status == 0, err
