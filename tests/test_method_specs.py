"""Each method's declaration (:class:`bayes_smlm.methods.spec.MethodSpec`) says what the method
does: its traits are checked against the function and its behaviour, and the command line shows
them."""

from __future__ import annotations

import pytest
from test_cli import run_cli

from bayes_smlm import get_task, simulate
from bayes_smlm.errors import ConfigError
from bayes_smlm.methods import get_method, list_methods, register_method, unregister_method
from bayes_smlm.methods.registry import method_spec
from bayes_smlm.methods.spec import MCMC_FLAGS, MethodSpec, _described_parameters

BUILT_IN = (
    "auto",
    "chees",
    "ddpm",
    "ensemble",
    "grid",
    "laplace",
    "mc_dropout",
    "npe",
    "nuts",
    "rwmh",
    "rwmh_paper",
    "smc",
)


@pytest.fixture(scope="module")
def isolated_frames():
    task = get_task("isolated")
    return task, simulate(task, 2, seed=11)


def test_every_built_in_declares_itself_consistently_with_its_signature():
    """A method weighing counts by evidence takes ``n_emitters``; one that does not, does not;
    every option has a default; and a rule for flags is stated."""
    assert set(BUILT_IN) <= set(list_methods())
    for name in BUILT_IN:
        spec = method_spec(name)
        names = {o.name for o in spec.options}
        assert (spec.emitter_count == "evidence") == ("n_emitters" in names), name
        assert not any(o.required for o in spec.options), name
        assert spec.flags and spec.summary(), name


@pytest.mark.parametrize("name", [n for n in BUILT_IN if method_spec(n).brightness == "fixed"])
def test_methods_declared_fixed_brightness_refuse_a_task_that_draws_it(name, isolated_frames):
    task, frames = isolated_frames
    drawn = get_task("isolated", {"prior.brightness": "drawn"})
    with pytest.raises(ConfigError, match="brightness"):
        get_method(name)(drawn, frames.adu[:1])


@pytest.mark.parametrize("name", ["grid", "laplace", "ensemble", "mc_dropout"])
def test_declared_output_is_what_the_method_returns(name, isolated_frames):
    """``returns="draws"``: θ draws in the result; ``"kde"``: the KDE's moments alone."""
    task, frames = isolated_frames
    result = get_method(name)(task, frames.adu, chains=2, draws=20)
    assert (result.theta is not None) == (method_spec(name).returns == "draws")
    assert result.kde_var.shape == (2,) + task.hr_shape


def test_laplace_declared_as_task_infers_a_drawn_brightness(isolated_frames):
    _, frames = isolated_frames
    drawn = get_task("isolated", {"prior.brightness": "drawn"})
    result = get_method("laplace")(drawn, frames.adu, chains=2, draws=20)
    assert result.settings["infer_intensity"] and result.settings["infer_background"]


def test_a_spec_with_an_unknown_trait_is_refused():
    with pytest.raises(ValueError, match="returns must be one of draws, kde"):
        MethodSpec("x", lambda *a, **k: None, returns="samples")  # type: ignore[arg-type]


def test_a_method_registered_without_traits_gets_the_defaults(isolated_frames):
    @register_method("spec_probe")
    def probe(
        task,
        adu,
        *,
        seed=0,
        chains=4,
        draws=1000,
        progress=False,
        first_frame=0,
        theta_true=None,
        width: float = 1.0,
    ):
        """A probe.

        Parameters
        ----------
        width : float
            How wide, px.
        """

    try:
        spec = method_spec("spec_probe")
        assert (spec.returns, spec.emitter_count, spec.brightness) == ("draws", "given", "fixed")
        assert spec.flags == MCMC_FLAGS and spec.chunkable
        assert [(o.name, o.default, o.help) for o in spec.options][-1] == (
            "width",
            1.0,
            "How wide, px.",
        )
    finally:
        unregister_method("spec_probe")


def test_numpy_parameters_are_read_with_shared_and_continued_entries():
    doc = (
        "Summary.\n\nParameters\n----------\nchains, draws : int\n    Chains and draws;\n"
        "    kept.\nseed : int\n    The seed.\n\nReturns\n-------\nout : X\n    Not a param.\n"
    )
    assert _described_parameters(doc) == {
        "chains": "Chains and draws; kept.",
        "draws": "Chains and draws; kept.",
        "seed": "The seed.",
    }


def test_methods_command_shows_traits_flags_and_option_help(capsys):
    status, out, err = run_cli(capsys, "methods")
    assert status == 0, err
    row = next(line for line in out.splitlines() if line.startswith("ddpm "))
    assert row.split()[1:4] == ["kde", "trained", "trained"]
    status, out, err = run_cli(capsys, "methods", "--show", "nuts")
    assert status == 0, err
    assert f"flags a frame when: {MCMC_FLAGS}" in out
    assert "warmup = 300" in out and "Window-adaptation steps per chain" in out
    assert "chunked runs (--out FILE.zarr, --scheduler): yes" in out


def test_posterior_names_the_methods_own_flag_rule(tmp_path, capsys):
    """A flagged frame is announced with the rule of the method that flagged it."""
    path = tmp_path / "bright.npz"  # i0 = 1e7: the grid cannot resolve this posterior
    status, _, err = run_cli(
        capsys,
        "simulate",
        "--task",
        "isolated",
        "--frames",
        "1",
        "--seed",
        "3",
        "--set",
        "i0=1e7",
        "--out",
        str(path),
    )
    assert status == 0, err
    status, out, err = run_cli(
        capsys, "posterior", str(path), "--method", "grid", "--out", str(tmp_path / "g.nc")
    )
    assert status == 0, err
    assert method_spec("grid").flags in out and "1 of 1 frames are flagged by grid" in out


def test_every_module_that_registers_a_method_is_imported_with_the_package():
    """Adding a method in the tree is one module: each ``@register_method("name")`` written in
    bayes_smlm/methods/ is registered by importing the package (nothing lists the modules)."""
    import re
    from pathlib import Path

    import bayes_smlm.methods as methods

    names = {
        m
        for path in Path(methods.__file__).parent.glob("*.py")
        for m in re.findall(r'@register_method\(\s*"(\w+)"', path.read_text())
    }
    assert names == set(BUILT_IN) and names <= set(list_methods())


def test_posterior_flags_name_the_methods_that_take_them_from_their_specs(capsys):
    """Each method-option flag of ``posterior`` sets an option some registered method takes,
    and its help names exactly those methods — read from the specs, never written by hand (the
    hand-written list had gone stale: --precision named ddpm alone)."""
    import re

    from bayes_smlm.cli.methods import method_flags, methods_taking

    flags = method_flags()
    for option in flags:
        assert methods_taking(option), f"{flags[option]} sets {option}, which no method takes"
    assert methods_taking("precision") == sorted(
        name
        for name in list_methods()
        if "precision" in {o.name for o in method_spec(name).options}
    )
    assert methods_taking("steps=None") == ["ddpm"]  # rwmh's steps cannot be None
    status, out, err = run_cli(capsys, "posterior", "--help")
    assert status == 0, err
    text = " ".join(out.split())
    group = text[text.index("method options:") :]  # the last group of the help
    for option, flag in flags.items():
        if flag == "--seed":
            continue
        help_of_flag = re.search(re.escape(flag) + r"\b.*?\[([^\]]*)\]", group)
        assert help_of_flag, flag
        assert help_of_flag.group(1).split(", ") == methods_taking(option), flag
    # the hand-written help names no methods, as the old "ddpm, npe: …" did (it went stale)
    import argparse

    from bayes_smlm.cli.methods import add_method_flags

    probe = argparse.ArgumentParser(add_help=False)
    add_method_flags(probe)
    names = "|".join(map(re.escape, list_methods()))
    for action in probe._actions:
        assert not re.match(rf"({names})(, ({names}))*:", action.help or ""), action.help


def test_methods_show_gives_the_flag_or_option_that_sets_each_option(capsys):
    status, out, err = run_cli(capsys, "methods", "--show", "ddpm")
    assert status == 0, err
    assert "solver = 'dpmpp'    (--solver)" in out
    assert "eta = 0.0    (--option eta=…)" in out
    assert "seed = 0    (--seed)" in out
