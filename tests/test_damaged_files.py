"""Classes 2 and 3 of the hostile-input review: damaged files and weights that load but are not
usable give one line naming the file and what is wrong — never a traceback, never a silent NaN."""

from __future__ import annotations

import json
import pickle
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from test_cli import assert_one_line_error, run_cli

from bayes_smlm.errors import ConfigError
from bayes_smlm.io.posteriors import load_posterior, save_posterior
from bayes_smlm.methods import get_method
from bayes_smlm.surrogates import checkpoint as checkpoints
from bayes_smlm.surrogates.phi.estimator import shipped_checkpoint


@pytest.fixture
def phi_copy(tmp_path):
    target = tmp_path / "phi"
    shutil.copytree(shipped_checkpoint("isolated"), target)
    return target


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def _pickle(path):
    path.write_bytes(pickle.dumps({"weights": [1.0, 2.0]}))  # written, never read back by us


def _nan(path):
    tensors = load_file(str(path))
    name = next(k for k, v in tensors.items() if v.is_floating_point())
    tensors[name] = torch.full_like(tensors[name], float("nan"))
    save_file(tensors, str(path))


@pytest.mark.parametrize(
    "damage, words",
    [
        (_truncate, ["not a readable safetensors file"]),
        (_pickle, ["not a readable safetensors file"]),
        (_nan, ["non-finite values"]),
    ],
)
def test_damaged_phi_weights_are_refused_in_one_line(
    phi_copy, frames_file, tmp_path, capsys, damage, words
):
    damage(phi_copy / "model.safetensors")
    status, _, err = run_cli(
        capsys,
        "detect-phi",
        str(frames_file),
        "--checkpoint",
        str(phi_copy),
        "--out",
        str(tmp_path / "locs.csv"),
    )
    assert_one_line_error(status, err, "argument --checkpoint:", "model.safetensors", *words)
    assert not (tmp_path / "locs.csv").exists()


def test_a_psi_unet_saved_as_bin_only_is_refused(tmp_path, frames_file, capsys):
    for name in ("phi-isolated", "psi-isolated"):
        shutil.copytree(checkpoints.SHIPPED_DIR / name, tmp_path / name)
    unet = tmp_path / "psi-isolated" / "unet"
    (unet / "diffusion_pytorch_model.safetensors").rename(unet / "diffusion_pytorch_model.bin")
    status, _, err = run_cli(
        capsys,
        "posterior",
        str(frames_file),
        "--method",
        "ddpm",
        "--checkpoint",
        str(tmp_path / "psi-isolated"),
        "--out",
        str(tmp_path / "d.nc"),
    )
    assert_one_line_error(
        status, err, "argument --checkpoint:", "diffusion_pytorch_model.safetensors", "is missing"
    )


def test_a_truncated_training_state_is_refused_on_resume(phi_copy, capsys):
    state = phi_copy / "training_state.safetensors"
    shutil.copy(phi_copy / "model.safetensors", state)
    _truncate(state)
    status, _, err = run_cli(
        capsys,
        "train-phi",
        "--task",
        "isolated",
        "--steps",
        "2",
        "--resume",
        "--quiet",
        "--out",
        str(phi_copy),
    )
    assert_one_line_error(
        status,
        err,
        "argument --out:",
        "training_state.safetensors",
        "not a readable safetensors file",
    )


def test_a_truncated_posterior_file_is_refused(tmp_path, isolated):
    frames = np.zeros((1, 20, 20), np.float32) + 100.0
    path = save_posterior(get_method("grid")(isolated, frames), tmp_path / "g.nc")
    _truncate(path)
    with pytest.raises(ConfigError, match="argument file: .*g.nc is not a readable posterior"):
        load_posterior(path)
    (tmp_path / "text.nc").write_text("hello")
    with pytest.raises(ConfigError, match="text.nc is not a readable posterior"):
        load_posterior(tmp_path / "text.nc")


@pytest.mark.parametrize("content", ['{"methods": {', "{}", "[1, 2]", '{"reference": "grid"}'])
def test_damaged_metrics_json_is_refused_by_report(tmp_path, capsys, content):
    folder = tmp_path / "study"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"study": "calibration"}))
    (folder / "metrics.json").write_text(content)
    status, _, err = run_cli(capsys, "report", str(folder))
    assert_one_line_error(status, err, "argument DIR:", "metrics.json")


def test_a_lone_npy_array_under_an_npz_name_is_refused(tmp_path, capsys):
    path = tmp_path / "frames.npz"
    with open(path, "wb") as handle:
        np.save(handle, np.zeros((2, 20, 20), np.float32))
    status, _, err = run_cli(
        capsys, "posterior", str(path), "--method", "grid", "--out", str(tmp_path / "p.nc")
    )
    assert_one_line_error(status, err, "argument FILE.npz:", "single .npy array")
