"""The torch parts on ``--device cuda`` and the JAX samplers on a GPU backend (marked ``gpu``:
deselected by default, run with ``pytest -m gpu`` where a CUDA device is present)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bayes_smlm.cli.main import main
from bayes_smlm.compare.exactness import grid_agreement
from bayes_smlm.forward.simulate import simulate
from bayes_smlm.forward.tasks import get_task
from bayes_smlm.methods import get_method
from bayes_smlm.surrogates.phi.estimator import PhiPredictor, load_phi

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="gpu: needs a CUDA device"),
]


def test_phi_on_cuda_matches_phi_on_the_cpu():
    task = get_task("paper")
    model, _ = load_phi(None, task)
    adu = simulate(task, 16, seed=21).adu
    cpu = PhiPredictor(model, task)(adu)
    gpu = PhiPredictor(model, task, device="cuda")(adu)
    # TF32 convolutions on the GPU: agreement to ~1e-3 of a kernel peak, not bit for bit
    np.testing.assert_allclose(gpu, cpu, atol=5e-3)


def test_ddpm_posterior_runs_on_cuda_through_the_cli(tmp_path, capsys):
    task = get_task("paper")
    frames = simulate(task, 2, seed=22)
    npz = tmp_path / "f.npz"
    np.savez(npz, adu=frames.adu, theta=frames.theta, config=task.to_json())
    assert (
        main(
            [
                "posterior",
                str(npz),
                "--method",
                "ddpm",
                "--device",
                "cuda",
                "--samples",
                "8",
                "--quiet",
                "--out",
                str(tmp_path / "p.nc"),
            ]
        )
        == 0
    )
    assert "method ddpm, 2 frames" in capsys.readouterr().out


def test_chees_on_the_jax_gpu_backend_agrees_with_the_grid():
    import jax

    if jax.default_backend() != "gpu":
        pytest.skip("gpu: JAX has no GPU backend here (install the gpu extra)")
    task = get_task("isolated")
    frames = simulate(task, 8, seed=23)
    grid = get_method("grid")(task, frames.adu)
    result = get_method("chees")(task, frames.adu, seed=3, batch_size=8)
    agreement = grid_agreement(result, grid)
    assert agreement.frame_agrees.all(), (agreement.z, agreement.sd_ratio)
