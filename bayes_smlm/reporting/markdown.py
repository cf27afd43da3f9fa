"""Helpers shared by every study report: provenance, Markdown tables, atomic figure output."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import os
import platform
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bayes_smlm.io.atomic import write_text

TRACKED_PACKAGES = (
    "bayes-smlm",
    "jax",
    "numpyro",
    "blackjax",
    "arviz-base",
    "arviz-stats",
    "arviz-plots",
    "torch",
    "diffusers",
    "numpy",
    "scipy",
    "scikit-image",
)


def git_commit(root: str | Path | None = None) -> str:
    """Short commit hash of the source tree, with ``-dirty`` if it has local changes."""
    root = Path(root) if root else Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            text=True,
            capture_output=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            text=True,
            capture_output=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


def package_versions(names: Sequence[str] = TRACKED_PACKAGES) -> dict[str, str]:
    """Installed versions of ``names`` ("not installed" where absent)."""
    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


# instruction sets that decide how fast the arithmetic here runs (bf16 on a CPU without them is
# emulated: slower than fp32)
SPEED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def cpu_description(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """The CPU's model name and which of :data:`SPEED_FLAGS` it has, e.g. ``"Intel(R) Xeon(R)
    Processor; avx2 avx512f avx512_bf16 amx_bf16"``: timings from another CPU are not
    comparable. Falls back to :func:`platform.processor` where there is no ``/proc/cpuinfo``."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return platform.processor() or "unknown"
    fields = {
        key.strip(): value.strip()
        for key, value in (line.split(":", 1) for line in text.splitlines() if ":" in line)
    }
    flags = set(fields.get("flags", "").split())
    present = " ".join(f for f in SPEED_FLAGS if f in flags) or "none of " + " ".join(SPEED_FLAGS)
    return f"{fields.get('model name', platform.processor() or 'unknown')}; {present}"


def provenance(**extra: Any) -> dict[str, Any]:
    """What a reader needs to reproduce a report: commit, versions, platform, cores, time and
    ``extra``."""
    return {
        "git_commit": git_commit(),
        "created_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cpu": cpu_description(),
        "packages": package_versions(),
        **extra,
    }


def provenance_markdown(prov: dict[str, Any]) -> str:
    """A short Markdown block of :func:`provenance`."""
    lines = [f"- {k}: `{v}`" for k, v in prov.items() if k != "packages"]
    versions = ", ".join(f"{k} {v}" for k, v in prov["packages"].items())
    lines.append(f"- packages: {versions}")
    return "\n".join(lines)


def markdown_table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], floatfmt: str = ".4g"
) -> str:
    """Render rows as a GitHub Markdown table; floats use ``floatfmt``."""

    def cell(v: Any) -> str:
        return format(v, floatfmt) if isinstance(v, float) else str(v)

    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(out)


def write_report(out: str | Path, body: str, prov: dict[str, Any]) -> Path:
    """Write ``out/report.md``: ``body`` followed by the provenance section."""
    text = body.rstrip() + "\n\n## Provenance\n\n" + provenance_markdown(prov) + "\n"
    return write_text(Path(out) / "report.md", text)
