"""README claims that tests can hold: every self-contained ```python block (the worked example
among them) runs when pasted alone, the Contents line links every section, the sample
`gpugrad train` output has the real format, and .ci/run runs the documented test command."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_worked_example_runs_alone(tmp_path):
    section = README.split("## Worked example", 1)[1]
    snippet = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    script = tmp_path / "snippet.py"
    script.write_text(snippet, encoding="utf-8")  # a fresh interpreter: no imports but its own
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120, env={"PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("tensor(0.25)") and "h5" in proc.stdout


def _python_blocks() -> list[tuple[int, str]]:
    """(line number, code) of every self-contained ```python block: one that imports gpugrad
    itself. Blocks without the import are fragments continuing the text around them."""
    blocks = [(README.count("\n", 0, m.start()) + 2, m.group(1))
              for m in re.finditer(r"^```python\n(.*?)^```", README, re.S | re.M)]
    return [(line, code) for line, code in blocks if re.search(r"^import gpugrad", code, re.M)]


def test_the_readme_has_self_contained_examples():
    assert len(_python_blocks()) >= 4  # tour, worked example, training, data parallel


@pytest.mark.parametrize("line, code", _python_blocks(), ids=lambda v: f"line{v}"
                         if isinstance(v, int) else "")
def test_every_python_block_runs_when_pasted_alone(tmp_path, line, code):
    script = tmp_path / "snippet.py"
    script.write_text(code, encoding="utf-8")
    # a fresh interpreter in an empty folder (snippets may write checkpoints), on the CPU
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path,
                          env={"PYTHONPATH": str(ROOT), "GPUGRAD_DEVICE": "cpu",
                               "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, f"README.md line {line}:\n{proc.stderr}"


def test_contents_links_every_section():
    contents = README.split("Contents:", 1)[1].split("\n\n", 1)[0]
    anchors = set(re.findall(r"\]\(#([a-z0-9-]+)\)", contents))
    sections = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-")
                for h in re.findall(r"^## (.+)$", README, re.M)}
    assert anchors == sections, (sorted(sections - anchors), sorted(anchors - sections))


def test_top_states_python_gpu_status_and_sample_output():
    top = README.split("## A quick tour", 1)[0]
    assert "Python ≥ 3.10" in top and "GPU status" in top
    assert re.search(r"^epoch   1/30  loss \d\.\d{4}  train acc .*test acc", top, re.M)
    assert re.search(r"^test accuracy \d+\.\d\d% on \d+ held-out digits", top, re.M)
    assert "session" not in README.lower()
    for extra in ("graphviz", "plot", "cuda12", "cuda13"):  # quoted: zsh globs [brackets]
        assert f"pip install gpugrad[{extra}]" not in README
        assert f"pip install .[{extra}]" not in README


def test_ci_runs_the_documented_test_command():
    top = "\n".join(README.splitlines()[:6])
    assert 'pip install ".[test]" && python -m pytest' in top
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    command = re.search(r'^python3 -m pip install "\.\[([a-z,]+)\]"', ci, re.M)
    install = command.group(1).split(",")
    assert install[0] == "test" and set(install) == {"test", "kernels", "plot"}
    assert "python3 -m pytest" in ci
    assert 'pip install ".[test,kernels,plot]"' in README  # and the README says so
