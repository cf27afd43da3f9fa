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
    assert "scripts/venv-run bayes-smlm study calibration" in README
    assert "scripts/venv-run pytest" in README


def test_readme_python_example_runs(capsys):
    block = re.search(r"```python\n(.*?)```", README, flags=re.S).group(1)
    exec(compile(block, "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert re.search(r"Laplace Σvar ÷ exact \d\.\d\d, 90 % coverage \d\.\d\d", printed)
    assert "(4, 80, 80)" in printed


def test_readme_links_exist_and_its_headline_is_the_reports():
    for target in re.findall(r"\]\(((?:docs|reports)/[^)#]+)\)", README):
        assert (ROOT / target).exists(), target
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "headline.py"), "--check"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


def test_docs_link_only_to_files_that_exist():
    for page in (ROOT / "docs").glob("*.md"):
        for target in re.findall(r"\]\(([^)#:]+\.md)\)", page.read_text()):
            assert (page.parent / target).exists(), (page.name, target)
