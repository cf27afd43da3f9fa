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
