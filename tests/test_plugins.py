"""Plug-in methods (entry points of group ``bayes_smlm.methods``) as a user installs them: one
that works runs through the CLI, one that fails to import or takes a built-in's name is reported
in one warning naming its distribution, and everything else keeps working."""

from __future__ import annotations

import sys
import warnings

import pytest
from test_cli import run_cli

from bayes_smlm.errors import ConfigError
from bayes_smlm.methods import registry

ENTRY_POINTS = """[bayes_smlm.methods]
good_plugin = fakeplug_good:method
broken_plugin = fakeplug_missing_module:method
odd_plugin = fakeplug_good:odd
nuts = fakeplug_good:method
"""
GOOD = '''
from bayes_smlm.methods import get_method


def method(task, adu, **options):
    """A plug-in: the Laplace posterior under another name."""
    result = get_method("laplace")(task, adu, **options)
    result.method = "good_plugin"
    return result


def odd(task, adu, **options):
    """A plug-in declaring a trait no method can have."""


odd.method_traits = {"returns": "images"}
'''


@pytest.fixture
def fake_distribution(tmp_path, monkeypatch):
    """``fakeplug 0.1`` installed as pip leaves it: a .dist-info with entry points on sys.path."""
    info = tmp_path / "fakeplug-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fakeplug\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    (tmp_path / "fakeplug_good.py").write_text(GOOD)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("_ENTRY_POINTS_LOADED",):
        monkeypatch.setattr(registry, name, False)
    monkeypatch.setattr(registry, "_PLUGINS", {})
    monkeypatch.setattr(registry, "_BROKEN", {})
    yield
    registry.unregister_method("good_plugin")
    sys.modules.pop("fakeplug_good", None)


def test_plugins_load_when_asked_and_a_broken_one_costs_only_itself(
    fake_distribution, frames_file, tmp_path, capsys
):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        names = registry.list_methods()
    assert {"good_plugin", "broken_plugin", "laplace"} <= set(names)
    (clash,) = [str(w.message) for w in caught if issubclass(w.category, registry.PluginWarning)]
    assert "'nuts' of fakeplug 0.1" in clash and "not loaded" in clash
    assert registry.get_method("nuts").__module__ == "bayes_smlm.methods.nuts"  # built-in kept
    with pytest.warns(
        registry.PluginWarning,
        match="'broken_plugin' of fakeplug 0.1 .* failed to load: ModuleNotFoundError",
    ):
        with pytest.raises(ConfigError, match="broken_plugin.*fakeplug 0.1 failed to load"):
            registry.get_method("broken_plugin")
    status, printed, err = run_cli(
        capsys,
        "posterior",
        str(frames_file),
        "--method",
        "good_plugin",
        "--draws",
        "50",
        "--quiet",
        "--out",
        str(tmp_path / "p.nc"),
    )
    assert status == 0, err
    assert (tmp_path / "p.nc").stat().st_size > 0
    status, _, err = run_cli(
        capsys,
        "posterior",
        str(frames_file),
        "--method",
        "laplace",
        "--draws",
        "50",
        "--quiet",
        "--out",
        str(tmp_path / "q.nc"),
    )
    assert status == 0, err  # the broken plug-in costs nothing else
    # one declaring an impossible trait is reported like one that fails to import
    with pytest.warns(
        registry.PluginWarning,
        match="'odd_plugin' of fakeplug 0.1 .* failed to load: ValueError: .*returns must be one",
    ):
        with pytest.raises(ConfigError, match="odd_plugin.*fakeplug 0.1 failed to load"):
            registry.method_spec("odd_plugin")
