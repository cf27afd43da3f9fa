"""compare: variance-map agreement against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from bayes_smlm.compare import variance_agreement


def test_identical_and_scaled_maps():
    rng = np.random.default_rng(0)
    ref = rng.random((3, 8, 8))
    same = variance_agreement(ref, ref)
    np.testing.assert_allclose(same.pearson, 1.0)
    np.testing.assert_allclose(same.summed_ratio, 1.0)
    double = variance_agreement(2 * ref, ref)
    np.testing.assert_allclose(double.pearson, 1.0)
    assert double.median_summed_ratio == pytest.approx(2.0)


def test_pearson_matches_numpy_corrcoef():
    rng = np.random.default_rng(1)
    a, b = rng.random((4, 5, 6)), rng.random((4, 5, 6))
    expected = [np.corrcoef(x.ravel(), y.ravel())[0, 1] for x, y in zip(a, b)]
    np.testing.assert_allclose(variance_agreement(a, b).pearson, expected, rtol=1e-12)


def test_constant_reference_is_an_error_not_nan():
    with pytest.raises(ValueError, match="constant"):
        variance_agreement(np.ones((1, 4, 4)), np.ones((1, 4, 4)))
