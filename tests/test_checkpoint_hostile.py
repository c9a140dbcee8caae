"""gg.load on hostile files and gg.save's file handling: nesting, malformed structure entries,
repeated tensor references, non-regular files, the header cap, temporary files, permissions and
symlinks."""

from __future__ import annotations

import json
import os
import signal
import stat
import struct
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import gpugrad as gg
from gpugrad import serialization
from gpugrad.serialization import MAX_DEPTH, MAX_HEADER_BYTES, load, save

ROOT = Path(__file__).resolve().parents[1]


def write_raw(path: Path, structure_text: str, tensors: dict | None = None,
              header_extra: dict | None = None) -> None:
    """A safetensors file with gpugrad's metadata but any structure JSON we like."""
    import safetensors.numpy as stn

    payload = stn.save(tensors or {}, metadata={"format": "gpugrad.checkpoint", "version": "1",
                                                "gpugrad": structure_text})
    if header_extra is not None:
        n = struct.unpack("<Q", payload[:8])[0]
        header = json.loads(payload[8:8 + n])
        header.update(header_extra)
        text = json.dumps(header).encode()
        payload = struct.pack("<Q", len(text)) + text + payload[8 + n:]
    path.write_bytes(payload)


def expect_bad(path: Path, *fragments: str) -> str:
    with pytest.raises(ValueError) as info:
        load(path)
    msg = str(info.value)
    assert str(path) in msg and "\n" not in msg
    for fragment in fragments:
        assert fragment in msg, msg
    return msg


# -- 1. nesting ----------------------------------------------------------------------------------
@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 500, 5000])
def test_deep_lists_in_the_structure_are_a_value_error(tmp_path, depth):
    path = tmp_path / "deep"
    write_raw(path, "[" * depth + "]" * depth)
    expect_bad(path, "nest", str(MAX_DEPTH))


def test_deep_dicts_in_the_structure_name_the_path(tmp_path):
    path = tmp_path / "deep"
    node: object = 1
    for _ in range(MAX_DEPTH - 2):
        node = [node]
    for _ in range(3):
        node = {"$dict": [["k", node]]}
    write_raw(path, json.dumps(node, separators=(",", ":")))
    msg = expect_bad(path, "deeper than 100")
    assert "'k.k.k.0.0.0." in msg  # the path inside the structure
    for depth in (330, 3000):
        write_raw(path, '{"$dict":[["k",' * depth + "1" + "]]}" * depth)
        expect_bad(path, "nest")


def test_deeply_nested_header_is_a_value_error(tmp_path):
    path = tmp_path / "deep"
    text = b"{" + b'"a":[' * 5000 + b"]" * 5000 + b"}"
    path.write_bytes(struct.pack("<Q", len(text)) + text)
    expect_bad(path, "the header nests")


def test_structure_at_the_depth_limit_round_trips(tmp_path):
    obj: object = [gg.tensor([1.0])]
    for i in range(MAX_DEPTH - 1):
        obj = {"k": obj} if i % 2 else (obj,)
    save(obj, tmp_path / "ok")
    back = load(tmp_path / "ok")
    for _ in range(MAX_DEPTH - 1):
        back = back["k"] if isinstance(back, dict) else back[0]
    assert back[0].tolist() == [1.0]


def test_save_refuses_cycles_and_over_deep_structures(tmp_path):
    cyclic: list = [1]
    cyclic.append(cyclic)
    with pytest.raises(ValueError, match="contains itself"):
        save({"a": cyclic}, tmp_path / "c")
    d: dict = {}
    d["self"] = d
    with pytest.raises(ValueError, match="'self'"):
        save(d, tmp_path / "c")
    deep: list = []
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(ValueError, match="deeper than 100"):
        save(deep, tmp_path / "c")
    shared = [1, 2]  # the same object twice, but not inside itself: fine
    save({"a": shared, "b": shared}, tmp_path / "c")
    assert load(tmp_path / "c") == {"a": [1, 2], "b": [1, 2]}


# -- 2. malformed entries --------------------------------------------------------------------------
@pytest.mark.parametrize("items, why", [
    ("[[1]]", "item 0"), ("[[1,2,3]]", "item 0"), ("[[]]", "item 0"), ('{"a":1}', "not a list"),
    ('[["a",1],5]', "item 1"), ("[[[1],2]]", "list key"), ("7", "int"),
])
def test_malformed_dict_entries_name_the_path(tmp_path, items, why):
    path = tmp_path / "bad"
    write_raw(path, '{"$dict":[["outer",{"$dict":' + items + "}]]}")
    expect_bad(path, "'outer'", "$dict", why)


@pytest.mark.parametrize("structure", [
    '{"$tensor": 5}', '{"$tensor": "w", "requires_grad": "yes"}', '{"$tensor": "w", "x": 1}',
    '{"$tuple": 3}', '{"$what": 1}', '{"$dict": [], "$tuple": []}',
])
def test_other_malformed_entries_are_value_errors(tmp_path, structure):
    path = tmp_path / "bad"
    write_raw(path, structure, {"w": np.ones(2, np.float32)})
    expect_bad(path, "structure entry")


# -- 3. repeated references ----------------------------------------------------------------------
def test_repeated_tensor_references_are_refused(tmp_path):
    path = tmp_path / "bomb"
    refs = [{"$tensor": "w", "requires_grad": False}] * 1000
    write_raw(path, json.dumps(refs), {"w": np.ones(1024, np.float32)})
    expect_bad(path, "'1'", "a second time")


def test_a_tensor_saved_twice_is_stored_twice(tmp_path):
    w = gg.tensor([1.0, 2.0])
    save({"a": w, "b": [w]}, tmp_path / "tied")
    back = load(tmp_path / "tied")
    assert back["a"].tolist() == back["b"][0].tolist() == [1.0, 2.0]


# -- 4. non-regular files ------------------------------------------------------------------------
def _load_with_timeout(path: Path, seconds: float = 10.0) -> BaseException | None:
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            load(path)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert outcome, f"gg.load({path}) did not return within {seconds} s"
    return outcome[0]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    exc = _load_with_timeout(fifo)
    assert isinstance(exc, ValueError) and "FIFO" in str(exc) and str(fifo) in str(exc)
    link = tmp_path / "link"
    link.symlink_to(fifo)
    exc = _load_with_timeout(link)
    assert isinstance(exc, ValueError) and "FIFO" in str(exc)


@pytest.mark.skipif(not os.path.exists("/dev/null"), reason="needs /dev/null")
def test_devices_and_directories_are_refused(tmp_path):
    link = tmp_path / "ckpt"
    link.symlink_to("/dev/null")
    expect_bad_kind = "character device"
    with pytest.raises(ValueError, match=expect_bad_kind):
        load(link)
    with pytest.raises(ValueError, match="a directory"):
        load(tmp_path)
    with pytest.raises(ValueError, match="regular file"):
        save({"a": 1}, link)


def test_symlink_to_a_checkpoint_loads(tmp_path):
    save({"a": gg.tensor([3.0])}, tmp_path / "real")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert load(tmp_path / "link")["a"].tolist() == [3.0]


# -- 5. header cap -------------------------------------------------------------------------------
def test_oversized_header_is_refused_with_the_cap_in_the_message(tmp_path):
    path = tmp_path / "big"
    write_raw(path, json.dumps("x" * (MAX_HEADER_BYTES + 16)))
    msg = expect_bad(path, "MAX_HEADER_BYTES", str(MAX_HEADER_BYTES))
    assert MAX_HEADER_BYTES <= 8 * 1024 * 1024
    assert "few KB" in msg


# -- 6. temporary files --------------------------------------------------------------------------
def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return int(proc.stdout)


@pytest.mark.skipif(os.name != "posix", reason="stale temp files are detected by pid on POSIX")
def test_stale_temp_files_of_dead_processes_are_removed(tmp_path):
    target = tmp_path / "ck.safetensors"
    stale = tmp_path / f".ck.safetensors.tmp-{_dead_pid()}-0"
    stale.write_bytes(b"half a checkpoint")
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        busy = tmp_path / f".ck.safetensors.tmp-{live.pid}-3"
        busy.write_bytes(b"being written")
        other = tmp_path / f".other.tmp-{_dead_pid()}-0"  # another target's: not ours to remove
        other.write_bytes(b"x")
        save({"a": 1}, target)
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
            [target.name, busy.name, other.name])
    finally:
        live.kill()
        live.wait()


@pytest.mark.skipif(os.name != "posix", reason="kill -9")
def test_saves_killed_midway_leave_no_files_behind(tmp_path):
    target = tmp_path / "ck.safetensors"
    script = ("import sys, numpy as np, gpugrad as gg\n"
              "big = np.ones(4_000_000, np.float32)\n"
              "sys.stdout.write('ready\\n'); sys.stdout.flush()\n"
              "while True:\n"
              f"    gg.save({{'w': big}}, {str(target)!r})\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env=env)
        assert proc.stdout.readline() == b"ready\n"
        threading.Event().wait(0.3)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    save({"a": 1}, target)
    assert [p.name for p in tmp_path.iterdir()] == [target.name]
    assert load(target) == {"a": 1}


def test_write_errors_name_the_target_not_the_temporary_file(tmp_path):
    path = tmp_path / "missing" / "ck.safetensors"
    with pytest.raises(FileNotFoundError) as info:
        save({"a": 1}, path)
    assert str(path) in str(info.value) and ".tmp" not in str(info.value)


# -- 7. permissions ------------------------------------------------------------------------------
@pytest.mark.skipif(os.name != "posix", reason="POSIX modes")
def test_new_files_honour_the_umask_and_replaced_files_keep_their_mode(tmp_path):
    old = os.umask(0o022)
    try:
        save({"a": 1}, tmp_path / "new")
        assert stat.S_IMODE(os.stat(tmp_path / "new").st_mode) == 0o644
        os.umask(0o077)
        save({"a": 1}, tmp_path / "private")
        assert stat.S_IMODE(os.stat(tmp_path / "private").st_mode) == 0o600
        os.chmod(tmp_path / "new", 0o640)
        save({"a": 2}, tmp_path / "new")
        assert stat.S_IMODE(os.stat(tmp_path / "new").st_mode) == 0o640
        assert load(tmp_path / "new") == {"a": 2}
    finally:
        os.umask(old)


# -- 8. symlinks -----------------------------------------------------------------------------------
def test_save_writes_through_a_symlink(tmp_path):
    real_dir = tmp_path / "store"
    real_dir.mkdir()
    real = real_dir / "ck.safetensors"
    save({"v": 1}, real)
    link = tmp_path / "latest"
    link.symlink_to(real)
    save({"v": 2}, link)
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert load(real) == {"v": 2} and load(link) == {"v": 2}
    assert sorted(p.name for p in real_dir.iterdir()) == ["ck.safetensors"]
    dangling = tmp_path / "next"
    dangling.symlink_to(real_dir / "new.safetensors")
    save({"v": 3}, dangling)  # like open(path, "w"): creates the link's target
    assert dangling.is_symlink() and load(real_dir / "new.safetensors") == {"v": 3}


def test_atomic_replace_happens_in_the_links_target_directory(tmp_path, monkeypatch):
    real = tmp_path / "store" / "ck"
    real.parent.mkdir()
    save({"v": 1}, real)
    (tmp_path / "link").symlink_to(real)
    seen = []
    monkeypatch.setattr(serialization.os, "replace",
                        lambda src, dst, _r=os.replace: (seen.append((src, dst)), _r(src, dst)))
    save({"v": 2}, tmp_path / "link")
    (src, dst), = seen
    assert os.path.dirname(src) == str(real.parent) and dst == str(real)
