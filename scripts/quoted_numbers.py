"""Every measured number README.md and docs/*.md quote, written from the reports' metrics.json
(never typed by hand).

    scripts/venv-run python scripts/quoted_numbers.py           # list each quoted number and its source
    scripts/venv-run python scripts/quoted_numbers.py --check   # exit 1 where a quote differs
    scripts/venv-run python scripts/quoted_numbers.py --write   # rewrite the quotes from the sources

A quoted number carries its source in an HTML comment right after it (invisible when rendered)::

    its 90 % intervals cover 0.891<!-- npe / scalars / coverage_90 | .3f -->

``REPORT / KEY / KEY …`` walks ``reports/REPORT/metrics.json`` (a key that is a whole number
indexes a list; keys may hold spaces and commas), and after ``|`` comes a Python format spec,
optionally preceded by a factor (``| 100 .1f``: per cent), or ``sigN`` (N significant
digits, thousands grouped: ``| sig2`` gives ``26,000``). The README's headline table
(between ``<!-- headline:start -->`` and ``<!-- headline:end -->``) is written whole by
:func:`headline.headline_table`.
"""

from __future__ import annotations

import json
import math
import re
import sys
from functools import cache
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from headline import headline_table, replace_in

ROOT = Path(__file__).resolve().parents[1]
PAGES = ("README.md", "docs/*.md")
QUOTE = re.compile(
    r"(?P<value>[-+−]?\d[\d,]*(?:\.\d+)?)<!--(?P<source>[^|>]+)\|(?P<spec>[^>]*?)-->"
)


@cache
def _metrics(root: Path, report: str) -> dict:
    path = root / "reports" / report / "metrics.json"
    if not path.exists():
        raise KeyError(f"reports/{report}/metrics.json does not exist")
    return json.loads(path.read_text())


def source_value(root: Path, source: str, spec: str) -> str:
    """The text a quote of ``source`` (``REPORT / KEY / …``) with ``spec`` (``[FACTOR] FORMAT``)
    should read."""
    report, *keys = (part.strip() for part in source.split("/"))
    value = _metrics(root, report)
    for key in keys:
        try:
            value = value[int(key)] if isinstance(value, list) else value[key]
        except (KeyError, IndexError, ValueError):
            raise KeyError(
                f"reports/{report}/metrics.json has no {' / '.join(keys)} (stopped at {key!r})"
            ) from None
    *factor, fmt = spec.split()
    number = float(value) * (float(factor[0]) if factor else 1.0)
    if fmt.startswith("sig"):  # sigN: N significant digits, thousands grouped ("26,000")
        digits = int(fmt[3:]) - 1 - int(math.floor(math.log10(abs(number)))) if number else 0
        number = round(number, digits)
        return format(number, f",.{max(digits, 0)}f")
    return format(number, fmt)


def quotes(root: Path = ROOT):
    """(page, line number, quoted text, source text, what the source gives) of every quote."""
    for pattern in PAGES:
        for page in sorted(root.glob(pattern)):
            for number, line in enumerate(page.read_text().splitlines(), 1):
                for match in QUOTE.finditer(line):
                    try:
                        expected = source_value(root, match["source"], match["spec"])
                    except KeyError as err:
                        expected = f"<{err.args[0]}>"
                    yield (
                        page.relative_to(root),
                        number,
                        match["value"],
                        match["source"].strip(),
                        expected,
                    )


def rewritten(text: str, root: Path = ROOT) -> str:
    """``text`` with every quote replaced by what its source gives."""

    def one(match: re.Match) -> str:
        value = source_value(root, match["source"], match["spec"])
        return f"{value}<!--{match['source']}|{match['spec']}-->"

    return QUOTE.sub(one, text)


def main(argv: list[str]) -> int:
    found = list(quotes())
    wrong = [q for q in found if q[2] != q[4]]
    readme = ROOT / "README.md"
    table_ok = replace_in(readme.read_text(), headline_table()) == readme.read_text()
    if "--write" in argv:
        for pattern in PAGES:
            for page in ROOT.glob(pattern):
                page.write_text(rewritten(page.read_text()))
        readme.write_text(replace_in(readme.read_text(), headline_table()))
        print(f"wrote {len(found)} quoted numbers and the headline table")
        return 0
    for page, line, quoted, source, expected in wrong if "--check" in argv else found:
        print(f"{page}:{line}: {quoted} <- {source} = {expected}")
    if not table_ok:
        print("README.md: the headline table differs from reports/calibration-paper")
    if "--check" in argv:
        print(f"{len(found)} quoted numbers, {len(wrong)} differ from their reports")
        return 0 if not wrong and table_ok else 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
