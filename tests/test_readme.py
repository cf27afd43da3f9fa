"""The README as a newcomer reads it: short, its Python example runs, its links exist, its
headline numbers are the reports'."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_readme_fits_on_a_few_screens_and_names_the_two_commands():
    assert len(README.splitlines()) <= 200
    example_end = README.index("```", README.index("```python") + 3)
    assert README[:example_end].count("\n") < 60, "the Python example must end on the first screen"
    assert "scripts/venv-run bayes-smlm study calibration" in README
    assert "scripts/venv-run pytest" in README


def test_readme_python_example_runs(capsys):
    block = re.search(r"```python\n(.*?)```", README, flags=re.S).group(1)
    exec(compile(block, "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert re.search(r"Laplace Σvar ÷ exact \d\.\d\d, 90 % coverage \d\.\d\d", printed)
    assert "(4, 80, 80)" in printed


def test_readme_links_exist_and_its_numbers_are_the_reports():
    """The README's links resolve, and every number README.md and docs/ quote with a source
    (and the headline table) equals what that report's metrics.json gives."""
    for target in re.findall(r"\]\(((?:docs|reports)/[^)#]+)\)", README):
        assert (ROOT / target).exists(), target
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "quoted_numbers.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout
    quoted = int(done.stdout.split("quoted numbers")[0].split()[-1])
    assert quoted >= 20, done.stdout


def test_a_quoted_number_that_differs_from_its_report_is_caught(tmp_path):
    """quoted_numbers.py on a tree with one quote off: it is listed beside the report's value,
    and rewriting puts that value back."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import quoted_numbers
    finally:
        sys.path.pop(0)
    page = tmp_path / "docs" / "page.md"
    page.parent.mkdir()
    (tmp_path / "reports" / "r").mkdir(parents=True)
    (tmp_path / "reports" / "r" / "metrics.json").write_text(
        '{"speed": [{"seconds": 80.94}], "rate": 0.8907}'
    )
    page.write_text(
        "took 81.0<!-- r / speed / 0 / seconds | .1f --> s, covers "
        "89<!-- r / rate | 100 .0f --> %\n"
    )
    found = list(quoted_numbers.quotes(tmp_path))
    assert [(q[2], q[4]) for q in found] == [("81.0", "80.9"), ("89", "89")]
    assert "80.9<!--" in quoted_numbers.rewritten(page.read_text(), tmp_path)


def test_docs_link_only_to_files_that_exist():
    for page in (ROOT / "docs").glob("*.md"):
        for target in re.findall(r"\]\(([^)#:]+\.md)\)", page.read_text()):
            assert (page.parent / target).exists(), (page.name, target)
