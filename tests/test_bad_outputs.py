"""Class 1 of the hostile-input review: an output that cannot be written is refused in one line
before any work, and a result whose write still fails at the end is kept, not lost."""

from __future__ import annotations

import numpy as np
import pytest
from test_cli import assert_one_line_error, run_cli

from bayes_smlm.errors import BayesSMLMError
from bayes_smlm.io.atomic import OutputError, read_npz, write_npz
from bayes_smlm.methods import PosteriorResult, register_method, unregister_method

CALLS: list[int] = []


@pytest.fixture
def counting_method():
    """A registered posterior method that records every call: proof that no work was done."""
    CALLS.clear()

    @register_method("count_calls")
    def count_calls(task, adu, *, seed=0, progress=False, theta_true=None, **options):
        CALLS.append(len(adu))
        zeros = np.zeros((len(adu), *task.hr_shape), np.float32)
        return PosteriorResult("count_calls", task, np.asarray(adu), zeros, zeros)

    yield "count_calls"
    unregister_method("count_calls")


@pytest.mark.parametrize(
    "make_target, message",
    [
        (lambda root: root / "folder.nc", "is a folder"),  # the name of an existing folder
        (lambda root: root / "file.txt" / "x.nc", "is a file"),  # a parent that is a file
    ],
)
def test_posterior_refuses_an_unwritable_out_before_sampling(
    tmp_path, capsys, frames_file, counting_method, make_target, message
):
    (tmp_path / "folder.nc").mkdir()
    (tmp_path / "file.txt").write_text("not a folder")
    status, _, err = run_cli(
        capsys,
        "posterior",
        str(frames_file),
        "--method",
        counting_method,
        "--out",
        str(make_target(tmp_path)),
    )
    assert_one_line_error(status, err, "argument --out:")
    assert message in err
    assert CALLS == []  # refused before the method ran


@pytest.mark.parametrize(
    "argv",
    [
        ["simulate", "--task", "isolated", "--frames", "2", "--seed", "0", "--out", "{folder}.npz"],
        ["detect-phi", "{frames}", "--out", "{folder}.csv"],
        ["study", "forward-model", "--preset", "smoke", "--out", "{file}"],
        ["train-phi", "--task", "isolated", "--steps", "1", "--out", "{file}"],
    ],
)
def test_every_writing_command_checks_its_out_first(tmp_path, capsys, frames_file, argv):
    (tmp_path / "x.npz").mkdir()
    (tmp_path / "x.csv").mkdir()
    (tmp_path / "a-file").write_text("")
    values = {
        "folder": str(tmp_path / "x"),
        "file": str(tmp_path / "a-file"),
        "frames": str(frames_file),
    }
    status, out, err = run_cli(capsys, *[a.format(**values) for a in argv])
    assert_one_line_error(status, err, "argument --out:")
    assert out == ""  # nothing ran, nothing was reported as written


def test_report_of_a_file_names_dir(tmp_path, capsys):
    (tmp_path / "a-file").write_text("")
    status, _, err = run_cli(capsys, "report", str(tmp_path / "a-file"))
    assert_one_line_error(status, err, "argument DIR:")


def test_a_write_that_fails_at_the_end_keeps_the_result_and_says_where(tmp_path):
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the writer expects a folder")
    data = np.arange(6.0)
    with pytest.raises(OutputError) as info:
        write_npz(blocked / "frames.npz", adu=data)
    message = str(info.value)
    assert isinstance(info.value, BayesSMLMError) and "\n" not in message
    kept = message.rsplit("kept in ", 1)[1]
    assert str(blocked / "frames.npz") in message
    np.testing.assert_array_equal(read_npz(kept)["adu"], data)


def test_a_folder_the_process_may_not_write_in_is_refused(
    tmp_path, monkeypatch, capsys, frames_file
):
    # Root ignores permission bits, so the refusal is provoked where the check probes the folder.
    import tempfile

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "TemporaryFile", denied)
    status, _, err = run_cli(
        capsys, "posterior", str(frames_file), "--method", "grid", "--out", str(tmp_path / "p.nc")
    )
    assert_one_line_error(status, err, "argument --out:", "cannot write in", "Permission denied")
