"""Fuzzing gg.load with mutated valid checkpoints: byte flips, truncations, and rewritten headers.

Every outcome must be a loaded object or a ``ValueError`` (the documented error for a file that is
not a checkpoint), never another exception, and the memory it takes must stay within a small
multiple of the file's size. ``tools/fuzz_checkpoint.py`` runs a longer, coverage-guided search.
"""

from __future__ import annotations

import json
import struct
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gpugrad as gg
from gpugrad.serialization import load, save

# Loading holds the file, the decoded arrays and their copies; parsing a hostile header costs up
# to ~50 bytes of Python objects per byte of JSON. Both are bounded by this, plus a fixed slack.
MEMORY_FACTOR, MEMORY_SLACK = 64, 1 << 20
SETTINGS = settings(max_examples=100, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])


def _valid_checkpoint() -> bytes:
    import os
    import tempfile

    gg.manual_seed(0)
    model = gg.nn.MLP([6, 5, 3])
    opt = gg.optim.Adam(model.parameters(), lr=0.01)
    model(gg.ones(2, 6)).sum().backward()
    opt.step()
    obj = {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 3,
           "names": ("a", None, 1.5), "ints": np.arange(5, dtype=np.int16)}
    with tempfile.TemporaryDirectory() as d:
        save(obj, os.path.join(d, "c"))
        with open(os.path.join(d, "c"), "rb") as f:
            return f.read()


VALID = _valid_checkpoint()
HEADER_LEN = struct.unpack("<Q", VALID[:8])[0]
HEADER = json.loads(VALID[8:8 + HEADER_LEN])
STRUCTURE = json.loads(HEADER["__metadata__"]["gpugrad"])


def check_load(tmp_path, blob: bytes) -> None:
    path = tmp_path / "fuzzed"
    path.write_bytes(blob)
    tracemalloc.start()
    try:
        load(path)
    except ValueError as exc:
        assert str(path) in str(exc), exc
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak <= MEMORY_FACTOR * len(blob) + MEMORY_SLACK, (peak, len(blob))


def with_header(header: dict, body: bytes = VALID[8 + HEADER_LEN:]) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + body


def test_the_unmutated_file_loads(tmp_path):
    check_load(tmp_path, VALID)


@SETTINGS
@given(flips=st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)),
                      min_size=1, max_size=8))
def test_byte_flips(tmp_path, flips):
    blob = bytearray(VALID)
    for pos, value in flips:
        blob[pos] = value
    check_load(tmp_path, bytes(blob))


@SETTINGS
@given(cut=st.integers(0, len(VALID) - 1), tail=st.binary(max_size=16))
def test_truncations(tmp_path, cut, tail):
    check_load(tmp_path, VALID[:cut] + tail)


JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                      st.floats(allow_nan=True), st.text(max_size=8))
JSON = st.recursive(JSON_LEAF, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4),
    st.builds(lambda v: {"$dict": v}, inner), st.builds(lambda v: {"$tuple": v}, inner),
    st.builds(lambda k, g: {"$tensor": k, "requires_grad": g},
              st.sampled_from(sorted(k for k in HEADER if k != "__metadata__")) | st.text(),
              JSON_LEAF)), max_leaves=20)


def _replace_somewhere(node, value, choice: int):
    """``node`` with one of its sub-entries (picked by ``choice``) replaced by ``value``."""
    spots = []

    def collect(n, setter):
        spots.append(setter)
        if isinstance(n, list):
            for i, v in enumerate(n):
                collect(v, lambda x, n=n, i=i: n.__setitem__(i, x))
        elif isinstance(n, dict):
            for k, v in n.items():
                collect(v, lambda x, n=n, k=k: n.__setitem__(k, x))

    root = [json.loads(json.dumps(node))]
    collect(root[0], lambda x: root.__setitem__(0, x))
    spots[choice % len(spots)](value)
    return root[0]


@SETTINGS
@given(value=JSON, choice=st.integers(0, 10_000))
def test_structure_rewrites(tmp_path, value, choice):
    header = json.loads(json.dumps(HEADER))
    header["__metadata__"]["gpugrad"] = json.dumps(_replace_somewhere(STRUCTURE, value, choice))
    check_load(tmp_path, with_header(header))


TENSOR_FIELD = st.sampled_from(["dtype", "shape", "data_offsets"])
FIELD_VALUE = st.one_of(JSON, st.sampled_from(["F32", "F64", "I64", "BOOL", "F16", "U8"]),
                        st.lists(st.integers(-1, 2**40), max_size=4))


@SETTINGS
@given(edits=st.lists(st.tuples(st.integers(0, 100), TENSOR_FIELD, FIELD_VALUE), max_size=4),
       metadata=st.one_of(st.none(), st.dictionaries(st.text(max_size=8), JSON, max_size=3)),
       duplicate=st.booleans())
def test_header_rewrites(tmp_path, edits, metadata, duplicate):
    header = json.loads(json.dumps(HEADER))
    names = sorted(k for k in header if k != "__metadata__")
    for index, field, value in edits:
        header[names[index % len(names)]][field] = value
    if metadata is not None:
        header["__metadata__"].update(metadata)
    if duplicate:  # many references to one stored tensor
        header["__metadata__"]["gpugrad"] = json.dumps(
            [{"$tensor": names[0], "requires_grad": False}] * 50)
    check_load(tmp_path, with_header(header))


@pytest.mark.parametrize("claimed", [0, 1, 2**32, 2**63, 2**64 - 1])
def test_header_length_field(tmp_path, claimed):
    check_load(tmp_path, struct.pack("<Q", claimed) + VALID[8:])
