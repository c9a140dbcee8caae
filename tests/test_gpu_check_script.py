"""``benchmarks/gpu_check.sh`` fits a device machine: each part, run as one command, must end
within the 600 s a command may take there, with a margin (540 s). The script's ``--plan`` mode
runs its real control flow but only lists each step and its timeout, so a step added anywhere in
a part is counted here."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
BUDGET_S = 540  # per part: a device command runs at most 600 s
PARTS = ("part1", "part2")

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _plan(*args: str) -> tuple[list[tuple[str, int]], dict[str, int]]:
    """The steps (name, timeout) ``--plan`` lists, and each part's stated worst case."""
    proc = subprocess.run(["bash", str(SCRIPT), *args, "--plan"], capture_output=True, text=True,
                          timeout=60, env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable})
    assert proc.returncode == 0, proc.stderr
    steps = [(m[1], int(m[2])) for m in re.finditer(r"^step (\S+) (\d+)$", proc.stdout, re.M)]
    worst = {m[1]: int(m[2]) for m in re.finditer(r"^(part\d): worst case (\d+) s$", proc.stdout,
                                                   re.M)}
    return steps, worst


def _kill_after() -> int:
    return int(re.search(r"^KILL_AFTER=(\d+)", SCRIPT.read_text(), re.M)[1])


@pytest.mark.parametrize("part", PARTS)
def test_each_part_fits_one_device_command(part):
    steps, worst = _plan(part)
    assert steps, f"{part} lists no steps"
    total = sum(limit + _kill_after() for _, limit in steps)
    assert worst == {part: total}
    assert total <= BUDGET_S, (f"{part}: its step timeouts (each + {_kill_after()} s to kill) add "
                               f"up to {total} s, over the {BUDGET_S} s budget: {steps}")


def test_the_parts_run_every_step_once_and_all_runs_both():
    by_part = {part: _plan(part)[0] for part in PARTS}
    everything, _ = _plan("all")
    assert everything == by_part["part1"] + by_part["part2"]
    names = [name for part in PARTS for name, _ in by_part[part] if name != "machine"]
    assert len(names) == len(set(names)), f"a step runs in both parts: {names}"
    # every step written in the script is reached by some part
    written = set(re.findall(r"^\s*step (\w+) \d+", SCRIPT.read_text(), re.M))
    assert written == set(names) | {"machine"}


def test_the_header_states_each_parts_worst_case():
    header = SCRIPT.read_text().split("set -uo pipefail", 1)[0]
    for part in PARTS:
        _, worst = _plan(part)
        stated = re.search(rf"gpu_check\.sh {part} +# worst case (\d+) s", header)
        assert stated and int(stated[1]) == worst[part], f"update the header's {part} line"


def test_bad_arguments_print_the_usage():
    for args in ([], ["part3"], ["part1", "--bogus"]):
        proc = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 2 and "usage:" in proc.stderr, args
