"""φ: the network, the shared training loop (resume, checkpoints) and its command line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from bayes_smlm.errors import ConfigError
from bayes_smlm.forward.simulate import simulate
from bayes_smlm.surrogates.phi.estimator import (
    PhiPredictor,
    architecture_for,
    frames_to_photons,
    load_phi,
)
from bayes_smlm.surrogates.phi.network import DeepSTORM, DeepSTORMConfig
from bayes_smlm.surrogates.phi.training import train_phi
from bayes_smlm.surrogates.settings import LoopSettings, PhiTraining
from bayes_smlm.surrogates.training import STATE_FILE, train

TINY = {"context_channels": 8, "dilations": (1, 2), "up_channels": (8, 4), "refine_blocks": 1}


def test_deepstorm_maps_lr_frames_to_hr_kdes_in_range(isolated):
    model = DeepSTORM(architecture_for(isolated, **TINY)).eval()
    out = model(torch.rand(3, 1, 20, 20) * 100)
    assert out.shape == (3, 1, 80, 80)
    assert out.min() >= 0 and out.max() <= model.config.output_max


def test_upsampling_must_be_a_power_of_two():
    with pytest.raises(ConfigError, match="argument optics.upsampling"):
        DeepSTORMConfig(upsampling=3, up_channels=(8,))


def test_frames_are_offset_subtracted_and_gain_corrected(isolated):
    adu = np.full((1, 20, 20), 130.0, dtype=np.float32)
    # (ADU − o)/g + w²/g² with o = 100, g = 1, w² = 5
    assert torch.allclose(frames_to_photons(adu, isolated), torch.full((1, 1, 20, 20), 35.0))
    with pytest.raises(ConfigError, match="argument adu"):
        frames_to_photons(np.zeros((2, 10, 10)), isolated)


@pytest.fixture(scope="module")
def tiny_run(isolated, tmp_path_factory):
    out = tmp_path_factory.mktemp("phi") / "run"
    settings = PhiTraining(
        steps=40,
        batch_size=8,
        lr=3e-3,
        validation_frames=32,
        validate_every=10,
        checkpoint_every=10,
    )
    state = train_phi(isolated, out, settings, widths=TINY, progress=False)
    return out, state


def test_training_lowers_the_held_out_loss(tiny_run):
    _, state = tiny_run
    val = [h["val_loss"] for h in state.history]
    assert len(val) == 4 and min(val[1:]) < 0.8 * val[0]


def test_checkpoint_holds_weights_config_and_tuned_detection(tiny_run, isolated):
    out, state = tiny_run
    config = json.loads((out / "config.json").read_text())
    assert config["kind"] == "deepstorm-phi" and config["progress"]["steps_done"] == 40
    assert config["detection"]["default"] == "peaks"
    assert set(config["detection"]) == {"default", "peaks", "log"}
    model, _ = load_phi(out, isolated)
    best = load_file(str(out / "model.safetensors"))
    assert all(torch.equal(best[k], v) for k, v in model.state_dict().items())
    assert config["progress"]["best_step"] == state.best_step


def test_checkpoint_for_another_task_is_refused(tiny_run, paper):
    out, _ = tiny_run
    with pytest.raises(ConfigError, match=r"argument checkpoint: .*n_emitters 1 vs 10"):
        load_phi(out, paper)


def test_fused_inference_matches_the_module(tiny_run, isolated):
    model, _ = load_phi(tiny_run[0], isolated)
    adu = simulate(isolated, 5, seed=4).adu
    with torch.no_grad():
        direct = model(frames_to_photons(adu, isolated))[:, 0].numpy()
    np.testing.assert_allclose(PhiPredictor(model, isolated, batch_size=2)(adu), direct, atol=1e-5)
    bf16 = PhiPredictor(model, isolated, precision="bf16")(adu)
    assert np.abs(bf16 - direct).max() < 0.05 * max(direct.max(), 1e-3) + 1e-3


def test_compiled_inference_matches_eager_with_a_padded_last_batch(tiny_run, isolated):
    model, _ = load_phi(tiny_run[0], isolated)
    adu = simulate(isolated, 5, seed=4).adu  # batches of 4 and 1: the 1 is padded to 4
    eager = PhiPredictor(model, isolated, batch_size=4)(adu)
    compiled = PhiPredictor(model, isolated, batch_size=4, compiled=True)(adu)
    assert compiled.shape == eager.shape
    # Inductor may fuse and reorder fp32 arithmetic: agreement to float rounding
    np.testing.assert_allclose(compiled, eager, atol=1e-5)


class _Interrupt(Exception):
    pass


def _loop_run(task, out, steps_before_crash=None):
    torch.manual_seed(0)
    model = DeepSTORM(architecture_for(task, **TINY))
    settings = PhiTraining(steps=6, batch_size=4, seed=3)
    from bayes_smlm.surrogates.phi.training import _batches

    def crash(step):
        if steps_before_crash is not None and step + 1 == steps_before_crash:
            raise _Interrupt

    val = simulate(task, 8, 3)
    x, y = frames_to_photons(val.adu, task), torch.from_numpy(val.kde)[:, None]
    kwargs = dict(
        batches=_batches(task, settings),
        step_loss=lambda b, s: torch.nn.functional.mse_loss(model(b[0]), b[1]),
        validate=lambda: torch.nn.functional.mse_loss(model(x), y),
        settings=LoopSettings(steps=6, validate_every=2, checkpoint_every=2, warmup_steps=2),
        out_dir=out,
        progress=False,
    )
    try:
        train(model, after_step=crash, **kwargs)
    except _Interrupt:
        torch.manual_seed(123)  # a resumed process starts from other weights and RNG state
        model = DeepSTORM(architecture_for(task, **TINY))
        kwargs["step_loss"] = lambda b, s: torch.nn.functional.mse_loss(model(b[0]), b[1])
        kwargs["validate"] = lambda: torch.nn.functional.mse_loss(model(x), y)
        state = train(model, resume=True, **kwargs).state
    else:
        state = None
    return model, state


def test_resume_after_a_crash_is_identical_to_an_uninterrupted_run(isolated, tmp_path):
    straight, _ = _loop_run(isolated, tmp_path / "a")
    resumed, state = _loop_run(isolated, tmp_path / "b", steps_before_crash=5)
    assert state.step == 6 and len(state.history) == 3
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    assert (tmp_path / "b" / STATE_FILE).is_file()


@pytest.mark.slow
@pytest.mark.parametrize("task_name, frames", [("isolated", 200), ("paper", 200)])
def test_shipped_checkpoint_meets_its_stated_metrics(task_name, frames):
    # The bars of issue 4 (stated on 1000 frames in reports/phi); here on 200 fresh frames, where
    # the binomial SE of recall on the paper task is ≈ 0.007 against a margin of ≈ 0.027.
    from bayes_smlm.forward.tasks import get_task
    from bayes_smlm.surrogates.phi.evaluation import evaluate_phi

    result = evaluate_phi(None, get_task(task_name), frames, seed=31)
    row = next(
        r
        for r in result["rows"]
        if (r["source"], r["detector"], r["refinement"]) == ("phi", "peaks", "gauss3")
    )
    if task_name == "isolated":
        assert row["precision"] >= 0.99 and row["recall"] >= 0.99
        crlb = result["sqrt_crlb_px"]
        assert row["rmse_x_px"] <= 1.5 * crlb and row["rmse_y_px"] <= 1.5 * crlb
    else:
        assert row["precision"] >= 0.98 and row["recall"] >= 0.85


def test_shipped_widefield_phi_detects_across_brightness():
    """The shipped `widefield` φ on 200 fresh frames (i0 and background drawn): precision ≥ 0.98
    on every background bin and recall ≥ 0.90 for emitters of 1000–3000 and 3000–10 000
    photons (stated on 1000 frames in its model card: 0.996–1.000, 0.952 and 0.985; the binomial
    SE of a recall of 0.95 on the ≈ 240 emitters of the smaller bin is 0.014), and above the
    DoG baseline's recall there."""
    from bayes_smlm.forward.tasks import get_task
    from bayes_smlm.surrogates.phi.evaluation import evaluate_phi

    result = evaluate_phi(None, get_task("widefield"), 200, seed=31)
    phi, dog = result["by_brightness"]["phi"], result["by_brightness"]["dog"]
    assert all(b["precision"] >= 0.98 for b in phi["background"]), phi["background"]
    for ours, baseline in zip(phi["intensity"][2:], dog["intensity"][2:]):
        assert ours["recall"] >= 0.90 and ours["recall"] > baseline["recall"], (ours, baseline)
