"""The benchmark studies (``bench-exact``, ``bench-ddpm``, ``bench-speed``, ``bench-dask``) under the
smoke preset: every table from one run, and the CPU their timings depend on named."""

from __future__ import annotations

import json

import pytest
from test_studies import study


@pytest.mark.slow
def test_bench_exact_smoke_writes_ess_and_wall_tables(tmp_path, capsys):
    out = tmp_path / "bench"
    study("bench-exact", "--preset", "smoke", "--out", str(out))
    metrics = json.loads((out / "metrics.json").read_text())
    assert [r["method"] for r in metrics["ess"]] == ["rwmh", "rwmh_paper", "nuts"]
    assert all(r["ess_per_second"] > 0 for r in metrics["ess"])
    assert {w["method"] for w in metrics["wall"]} == {"nuts", "grid"}
    assert "ESS per second" in (out / "report.md").read_text()


@pytest.mark.slow
def test_bench_ddpm_smoke_times_the_samplers_beside_nuts(tmp_path, capsys):
    out = tmp_path / "bd"
    study("bench-ddpm", "--preset", "smoke", "--out", str(out))
    rows = json.loads((out / "metrics.json").read_text())["rows"]
    assert [r["method"].split(",")[0] for r in rows] == ["DDPM", "DDPM", "NUTS 4 × 1000 (exact)"]
    assert all(r["seconds_per_frame"] > 0 for r in rows)


@pytest.mark.slow
def test_bench_speed_smoke_prints_every_table_from_one_run(tmp_path, capsys):
    out = tmp_path / "speed"
    printed = study("bench-speed", "--preset", "smoke", "--out", str(out))
    metrics = json.loads((out / "metrics.json").read_text())
    labels = [r["method"] for r in metrics["isolated"]]
    assert labels == ["nuts", "chees, empty compilation cache", "chees, filled compilation cache"]
    assert all(r["wall_seconds"] > r["method_seconds"] > 0 for r in metrics["isolated"])
    assert {r["method"] for r in metrics["dense"]} == {"nuts", "chees"}
    assert all(r["agree"] == 1.0 for r in metrics["agreement"])  # 4 frames: every one agrees
    nuts = next(r for r in metrics["dense"] if r["method"] == "nuts")["seconds_per_frame"]
    assert all(abs(r["per_nuts"] - r["seconds_per_frame"] / nuts) < 1e-9 for r in metrics["ddpm"])
    assert [r["variant"].split(",")[0] for r in metrics["phi"]] == ["fp32", "bf16 autocast", "bf16"]
    assert metrics["phi"][0]["frames_per_second"] > 0  # fp32 eager runs anywhere
    # each variant runs in its own process: one that crashes it is reported, not fatal
    assert all(r["frames_per_second"] or r["failed"] for r in metrics["phi"])
    assert "cpu" in metrics["provenance"]  # timings from another CPU are not comparable
    assert "÷ NUTS s/frame" in printed and "frames/s" in printed
    assert str(tmp_path) not in (out / "report.md").read_text() + (out / "metrics.json").read_text()


@pytest.mark.slow
def test_bench_dask_smoke_finds_the_workers_numbers_equal_to_one_process(tmp_path, capsys):
    out = tmp_path / "dask"
    printed = study("bench-dask", "--preset", "smoke", "--out", str(out))
    metrics = json.loads((out / "metrics.json").read_text())
    assert [r["scheduler"] for r in metrics["runs"]] == [None, "local:1", "local:2"]
    assert all(r["differing_variables"] == [] and r["variables"] > 10 for r in metrics["runs"])
    assert all(r["wall_seconds"] > 0 for r in metrics["runs"])
    assert "bitwise equal to one process" in printed
    assert str(tmp_path) not in (out / "report.md").read_text() + (out / "metrics.json").read_text()


def test_reports_name_the_cpu_and_the_instruction_sets_their_timings_depend_on(tmp_path):
    from bayes_smlm.reporting.markdown import cpu_description

    info = tmp_path / "cpuinfo"
    info.write_text(
        "processor\t: 0\nmodel name\t: Some CPU @ 2 GHz\nflags\t\t: fpu avx2 "
        "amx_bf16 sse\n\nprocessor\t: 1\nmodel name\t: Some CPU @ 2 GHz\n"
        "flags\t\t: fpu avx2 amx_bf16 sse\n"
    )
    assert cpu_description(info) == "Some CPU @ 2 GHz; avx2 amx_bf16"
    info.write_text("model name\t: Old CPU\nflags\t\t: fpu sse\n")
    assert cpu_description(info) == "Old CPU; none of avx2 avx512f avx512_bf16 amx_bf16"
    assert cpu_description(tmp_path / "missing")  # no /proc: the platform's name, never a crash
