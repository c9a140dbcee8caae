"""gpugrad bench's report: machine load before/after with a warning when busy, noisy rows marked,
and a plot whose every panel shows data."""

from __future__ import annotations

import json

import pytest

from gpugrad.bench import load as bench_load
from gpugrad.bench.report import add_derived, format_table, plot
from gpugrad.cli import main


def _row(suite, name, case, median, iqr, device="cpu", impl="gpugrad", variant="", size=1.0):
    return {"suite": suite, "name": name, "case": case, "device": device, "impl": impl,
            "variant": variant, "median_s": median, "q1_s": median, "q3_s": median + iqr,
            "iqr_s": iqr, "min_s": median, "max_s": median + iqr, "first_call_s": median,
            "repeats": 5, "work": 64.0, "unit": "samples/s", "size": size,
            "size_unit": "elements"}


def _result(rows, busy):
    sample = {"interval_s": 0.5, "other_cpus": 1.5 if busy else 0.0, "loadavg_1m": 1.0}
    return {"versions": {"gpugrad": "0"}, "date": "today",
            "machine": {"cpu": {"summary": "a CPU", "threads": 2}, "gpus": []},
            "load": {"before": sample, "after": sample, "busy": busy},
            "rows": rows, "skipped": []}


def test_noisy_rows_are_marked_and_a_busy_machine_is_reported():
    rows = [_row("ops", "mul", "n=1", 1e-3, 2e-3), _row("ops", "mul", "n=2", 1e-3, 1e-4)]
    add_derived(rows)
    assert [r["noisy"] for r in rows] == [True, False]
    text = format_table(_result(rows, busy=True))
    assert "1 ms !" in text and "WARNING" in text and "1.50 cores used by other" in text
    quiet = format_table(_result(rows, busy=False))
    assert "WARNING" not in quiet and "machine load: before" in quiet


def test_busy_threshold():
    assert bench_load.is_busy({"other_cpus": 1.0}, threads=2)
    assert not bench_load.is_busy({"other_cpus": 0.01}, threads=2)
    assert bench_load.is_busy({"other_cpus": None, "loadavg_1m": 3.0}, threads=2)
    sample = bench_load.sample_load(0.05)
    assert set(sample) == {"interval_s", "other_cpus", "loadavg_1m"}


def test_bench_json_records_the_load(tmp_path):
    path = tmp_path / "b.json"
    assert main(["bench", "--quick", "--devices", "cpu", "--suite", "ops", "--quiet",
                 "--json", str(path)]) == 0
    r = json.loads(path.read_text())
    assert {"before", "after", "busy"} <= set(r["load"])
    assert all(isinstance(row["noisy"], bool) for row in r["rows"])


@pytest.mark.parametrize("suites", [("ops", "mlp", "kernels"), ("ops",), ("mlp",)])
def test_every_plot_panel_shows_data(tmp_path, monkeypatch, suites):
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    rows = []
    if "ops" in suites:
        for op in ("matmul", "mul", "sum"):
            rows += [_row("ops", op, f"n={n}", 1e-6 * n, 0, size=n) for n in (1, 10, 100)]
    if "mlp" in suites:
        rows += [_row("mlp", "train step", "784-128-10 b64", 1e-3, 0),
                 _row("mlp", "digits epoch", "64-128-10", 0.2, 0)]
    if "kernels" in suites:
        rows += [_row("kernels", "sigmoid", "n=4096", 1e-5, 0, variant="fused"),
                 _row("kernels", "sigmoid", "n=4096", 2e-5, 0, variant="unfused")]
    add_derived(rows)
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    plot(_result(rows, busy=False), tmp_path / "b.png")
    (fig,) = figures
    axes = [ax for ax in fig.axes if ax.get_visible()]
    expected = 3 * ("ops" in suites) + ("mlp" in suites) + ("kernels" in suites)
    assert len(axes) == expected
    for ax in axes:
        assert ax.lines or ax.patches, ax.get_title()
    titles = " ".join(ax.get_title() for ax in axes)
    if "mlp" in suites:
        assert "throughput" in titles  # one unit for steps and epochs, not mixed times
    assert (tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"
