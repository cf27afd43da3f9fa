"""Windows refitted together: a misfit window goes again with the windows beside it, never
with another frame's, and alone where the group would not fit in one window."""

from __future__ import annotations

import numpy as np

from bayes_smlm.acquisition.neighbours import refit_groups

REACH, HEIGHT, LARGEST = 6.0, 64, 8


def _table(rows: list[tuple[int, int, float, float]]) -> dict[str, np.ndarray]:
    """Rows (frame, window, x, y)."""
    frame, window, x, y = (np.asarray(column) for column in zip(*rows))
    return {"frame": frame, "window": window, "x": x.astype(float), "y": y.astype(float)}


def test_a_misfit_window_is_refitted_with_the_window_beside_it_only():
    table = _table(
        [
            (0, 0, 10.0, 10.0),  # the misfit window, two emitters
            (0, 0, 12.0, 11.0),
            (0, 1, 16.0, 12.0),  # beside it: 4 px from (12, 11)
            (0, 1, 21.0, 12.0),  # same window, 9 px away: comes with its window
            (0, 2, 40.0, 40.0),  # far away in the same frame
            (1, 3, 12.0, 11.0),  # same place, another frame
        ]
    )
    again, group = refit_groups(table, np.array([0]), REACH, HEIGHT, LARGEST)
    np.testing.assert_array_equal(again, [True, True, True, True, False, False])
    np.testing.assert_array_equal(group, [0, 0, 0, 0])


def test_separate_misfit_windows_form_separate_groups():
    table = _table([(0, 0, 10.0, 10.0), (0, 1, 40.0, 40.0), (1, 2, 10.0, 10.0)])
    again, group = refit_groups(table, np.array([0, 1, 2]), REACH, HEIGHT, LARGEST)
    assert again.all()
    assert len(set(group.tolist())) == 3


def test_a_group_too_large_for_one_window_refits_only_the_misfit_windows_each_alone():
    # two misfit windows of 4 emitters in a row, 3 px apart, and a neighbour: 9 emitters
    misfit = [(0, w, 10.0 + 3.0 * (4 * w + i), 20.0) for w in (0, 1) for i in range(4)]
    table = _table(misfit + [(0, 2, 10.0 + 3.0 * 8, 20.0)])
    again, group = refit_groups(table, np.array([0, 1]), REACH, HEIGHT, LARGEST)
    np.testing.assert_array_equal(again, [True] * 8 + [False])
    assert len(set(group[:4])) == len(set(group[4:])) == 1 and group[0] != group[4]
    # room for the refit's extra candidate: 7 emitters still go together
    again, group = refit_groups(_table(misfit[:7]), np.array([0, 1]), REACH, HEIGHT, LARGEST)
    assert again.all() and (group == 0).all()
