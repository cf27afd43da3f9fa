"""Shared fixtures. Tests use fixed seeds; tolerances come from sampling statistics."""

from __future__ import annotations

import pytest

from bayes_smlm.forward.tasks import get_task


@pytest.fixture(scope="session")
def isolated():
    return get_task("isolated")


@pytest.fixture(scope="session")
def paper():
    return get_task("paper")


@pytest.fixture(scope="session", autouse=True)
def reference_cache(tmp_path_factory):
    """Exact reference posteriors are cached in a folder of this test session, never in the
    user's cache (tests see the same cache behaviour a user does)."""
    with pytest.MonkeyPatch.context() as patch:
        folder = tmp_path_factory.mktemp("reference-cache")
        patch.setenv("BAYES_SMLM_CACHE", str(folder))
        yield folder


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
    """JAX's persistent compilation cache in a folder of this test session, as every
    ``bayes-smlm`` process has one: tests that trace the same sampler again (a fresh closure per
    call) and the Dask workers they start load it instead of compiling it again. Tests of the
    cache itself set their own."""
    import jax

    folder = tmp_path_factory.mktemp("jax-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("JAX_COMPILATION_CACHE_DIR", str(folder))  # subprocesses and workers
        previous = jax.config.jax_compilation_cache_dir
        jax.config.update("jax_compilation_cache_dir", str(folder))
        yield folder
        jax.config.update("jax_compilation_cache_dir", previous)


@pytest.fixture
def frames_file(tmp_path):
    """Two simulated `isolated` frames written as `bayes-smlm simulate` writes them."""
    from bayes_smlm.forward.simulate import simulate
    from bayes_smlm.io.atomic import write_npz

    task = get_task("isolated")
    batch = simulate(task, 2, 1)
    return write_npz(
        tmp_path / "f.npz",
        adu=batch.adu,
        theta=batch.theta,
        kde=batch.kde,
        config=task.to_json(),
        seed=1,
    )
