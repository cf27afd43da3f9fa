"""``ensemble`` and ``mc_dropout``: per-pixel moments of several φ's / dropout passes, against the
members run one by one; checkpoints refused in one line when they cannot serve."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from bayes_smlm.errors import ConfigError
from bayes_smlm.forward.simulate import simulate
from bayes_smlm.forward.tasks import get_task
from bayes_smlm.methods import get_method
from bayes_smlm.surrogates.checkpoint import read_safetensors, shipped_checkpoint
from bayes_smlm.surrogates.phi.estimator import PhiPredictor, load_phi


@pytest.fixture(scope="module")
def task():
    return get_task("isolated")


@pytest.fixture(scope="module")
def frames(task):
    return simulate(task, 4, 9).adu


def _copy_phi(dest, *, scale: float = 1.0, dropout: float | None = None):
    """A φ checkpoint: the shipped isolated one with its weights scaled, or with dropout set."""
    shutil.copytree(shipped_checkpoint("phi", "isolated"), dest)
    tensors, _ = read_safetensors(dest / "model.safetensors")
    save_file(
        {
            k: (v * scale if v.is_floating_point() and k.endswith("weight") else v)
            for k, v in tensors.items()
        },
        str(dest / "model.safetensors"),
    )
    if dropout is not None:
        config = json.loads((dest / "config.json").read_text())
        config["architecture"]["dropout"] = dropout
        (dest / "config.json").write_text(json.dumps(config))
    return dest


def test_ensemble_moments_are_those_of_its_members_run_one_by_one(tmp_path, task, frames):
    members = [
        _copy_phi(tmp_path / "ens" / f"member-{k}", scale=s)
        for k, s in ((1, 1.0), (2, 1.02), (3, 0.97))
    ]
    result = get_method("ensemble")(task, frames, checkpoint=tmp_path / "ens")
    each = np.stack([PhiPredictor(load_phi(m, task)[0], task)(frames) for m in members], 1)
    np.testing.assert_allclose(result.kde_mean, each.mean(1), atol=1e-6)
    np.testing.assert_allclose(result.kde_var, each.var(1, ddof=1), atol=1e-7)
    assert result.kde_var.max() > 0 and result.settings["members"] == 3


def test_an_ensemble_of_one_is_refused(tmp_path, task, frames):
    _copy_phi(tmp_path / "ens" / "member-1")
    with pytest.raises(ConfigError, match="at least 2"):
        get_method("ensemble")(task, frames, checkpoint=tmp_path / "ens")


def test_mc_dropout_is_reproducible_and_spreads_where_phi_sees_signal(tmp_path, task, frames):
    folder = _copy_phi(tmp_path / "drop", dropout=0.1)
    run = get_method("mc_dropout")
    a = run(task, frames, checkpoint=folder, passes=16, seed=3)
    b = run(task, frames, checkpoint=folder, passes=16, seed=3)
    c = run(task, frames, checkpoint=folder, passes=16, seed=4)
    np.testing.assert_array_equal(a.kde_var, b.kde_var)
    assert not np.array_equal(a.kde_var, c.kde_var)
    bright = a.kde_mean > 0.5 * a.kde_mean.max()
    assert a.kde_var[bright].min() > 0


def test_mc_dropout_draws_are_whole_network_passes(tmp_path, task, frames):
    """Running the layers below the dropout once is the same as T whole passes."""
    folder = _copy_phi(tmp_path / "drop", dropout=0.1)
    model = load_phi(folder, task)[0]
    model.dropout.train()
    photons = torch.from_numpy(frames[:1] - task.camera.offset + 5.0)[:, None].float()
    torch.manual_seed(0)
    whole = torch.stack([model(photons) for _ in range(3)])
    torch.manual_seed(0)
    features = model.features(photons)
    split = torch.stack([model.readout(features) for _ in range(3)])
    torch.testing.assert_close(whole, split)


def test_mc_dropout_refuses_a_phi_without_dropout(task, frames):
    with pytest.raises(ConfigError, match="without dropout"):
        get_method("mc_dropout")(task, frames, checkpoint=shipped_checkpoint("phi", "isolated"))
    with pytest.raises(ConfigError, match="passes"):
        get_method("mc_dropout")(task, frames, passes=1)


SHIPPED = sorted(
    p.parent
    for p in shipped_checkpoint("phi-ensemble", "*").parent.glob(
        "phi-ensemble-*/member-*/model.safetensors"
    )
) + sorted(
    p.parent for p in shipped_checkpoint("phi", "*").parent.glob("phi-dropout-*/model.safetensors")
)


@pytest.mark.slow
@pytest.mark.parametrize("folder", SHIPPED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_spread_networks_reach_their_recorded_metrics(folder):
    """The validation MSE of training, and the MSE on fresh frames stated in the model card."""
    from bayes_smlm.surrogates.checkpoint import verify_shipped
    from bayes_smlm.surrogates.phi.estimator import read_config

    verify_shipped(folder)
    config = read_config(folder)
    task = get_task(config["task"]["name"])
    predictor = PhiPredictor(load_phi(folder, task)[0], task)
    metrics = config["metrics"]
    for frames, seed, recorded in (
        (
            config["training"]["validation_frames"],
            config["training"]["seed"],
            config["progress"]["best_val_mse"],
        ),
        (metrics["fresh_frames"], metrics["fresh_seed"], metrics["fresh_mse"]),
    ):
        batch = simulate(task, frames, seed)
        mse = np.mean((predictor(batch.adu) - batch.kde) ** 2)
        np.testing.assert_allclose(mse, recorded, rtol=2e-3)


def test_the_shipped_spread_methods_run_for_every_task_they_ship_for():
    shipped = {
        p.name.split("-", 2)[2]
        for p in shipped_checkpoint("phi", "*").parent.glob("phi-ensemble-*")
    }
    assert "isolated" in shipped
    for name in shipped:
        task = get_task(name)
        adu = simulate(task, 2, 5).adu
        for method in ("ensemble", "mc_dropout"):
            result = (
                get_method(method)(task, adu, passes=8)
                if method == "mc_dropout"
                else get_method(method)(task, adu)
            )
            assert np.isfinite(result.kde_var).all() and result.kde_var.max() > 0
