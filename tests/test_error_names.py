"""Class 7 of the hostile-input review: a message names the argument that held the bad value."""

from __future__ import annotations

import json

from test_cli import assert_one_line_error, run_cli


def test_messages_name_what_the_user_typed(tmp_path, capsys):
    """Class 7: the argument named is the one that held the bad value."""
    status, _, err = run_cli(capsys, "tasks", "--show", "crowded")
    assert_one_line_error(status, err, "argument --show:", "unknown task 'crowded'")
    status, _, err = run_cli(
        capsys,
        "train-phi",
        "--task",
        "isolated",
        "--steps",
        "2",
        "--resume",
        "--out",
        str(tmp_path / "never-trained"),
    )
    assert_one_line_error(status, err, "argument --out:")
    folder = tmp_path / "study"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"study": "no-such-study"}))
    status, _, err = run_cli(capsys, "report", str(folder))
    assert_one_line_error(status, err, "argument DIR:", "unknown study 'no-such-study'")
    (tmp_path / "text.npz").write_text("not an archive")
    status, _, err = run_cli(
        capsys,
        "posterior",
        str(tmp_path / "text.npz"),
        "--method",
        "grid",
        "--out",
        str(tmp_path / "p.nc"),
    )
    assert_one_line_error(status, err, "argument FILE.npz:", "not a zip archive")
    assert "pickled" not in err
