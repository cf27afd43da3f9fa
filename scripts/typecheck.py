"""Type gate: mypy on the package (``[tool.mypy]`` in pyproject.toml) as a ratchet.

The numerical code hands arrays of NumPy, JAX and torch to one another, and mypy still finds
errors there (mostly ``Array`` against ``ndarray`` against ``float`` in annotations); their count
per file is recorded in ``scripts/mypy-baseline.json``. A file with more errors than recorded —
new code, or a change that breaks an annotation — fails the gate and prints them; fewer is
progress (``--update`` records it). New modules start at zero.

    scripts/venv-run python scripts/typecheck.py            # the gate (.ci/run)
    scripts/venv-run python scripts/typecheck.py --update   # record a lower count
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT / "scripts" / "mypy-baseline.json"
ERROR = re.compile(r"^(?P<file>[^:]+):\d+: error: ")


def main(argv: list[str]) -> int:
    proc = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True,
                          text=True)
    errors = [line for line in proc.stdout.splitlines() if ERROR.match(line)]
    counts = Counter(ERROR.match(line)["file"] for line in errors)
    if "--update" in argv:
        BASELINE.write_text(json.dumps(dict(sorted(counts.items())), indent=1) + "\n")
        print(f"recorded {sum(counts.values())} errors in {len(counts)} files")
        return 0
    allowed = json.loads(BASELINE.read_text())
    worse = {f: n for f, n in counts.items() if n > allowed.get(f, 0)}
    for line in errors:
        if ERROR.match(line)["file"] in worse:
            print(line)
    if worse:
        print(f"typecheck: more mypy errors than recorded in {', '.join(sorted(worse))} "
              f"(scripts/mypy-baseline.json)", file=sys.stderr)
        return 1
    print(f"typecheck: {sum(counts.values())} errors, none beyond the baseline "
          f"({sum(allowed.values())})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
