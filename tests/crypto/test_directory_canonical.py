"""Canonical JSON, the byte form the contact directory is signed in."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crypto import canonical
from crypto.canonical import JSONValue

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-canonical.MAX_INT, canonical.MAX_INT)
    | st.text(alphabet=st.characters(codec="utf-8")),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(alphabet=st.characters(codec="utf-8")), children)
    ),
    max_leaves=20,
)


@given(json_values)
def test_round_trip_is_exact(value: JSONValue) -> None:
    data = canonical.dumps(value)
    assert canonical.loads(data) == value
    assert canonical.dumps(canonical.loads(data)) == data


def test_known_form() -> None:
    value: JSONValue = {"b": [1, True, None], "a": 'é\n"', "A": {}, "é": -3}
    assert canonical.dumps(value) == '{"A":{},"a":"é\\n\\"","b":[1,true,null],"é":-3}'.encode()


@pytest.mark.parametrize(
    "value", [1.0, float("nan"), 2**53, -(2**53), {1: "x"}, ("t",), b"x", "\ud800"]
)
def test_dumps_refuses_what_is_not_canonical_json(value: object) -> None:
    with pytest.raises(ValueError):
        canonical.dumps(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "data",
    [
        b'{"a":1,"a":2}',
        b'{"a":{"b":1,"b":1}}',
        b"[1.0]",
        b"[1e3]",
        b"[NaN]",
        b"[Infinity]",
        b"[-Infinity]",
        b"\xff",
        b"\xef\xbb\xbf{}",
        b"",
        b"{",
        b"[" * 100_000 + b"]" * 100_000,
        b"1" * 5000,
    ],
)
def test_loads_refuses_ambiguous_or_hostile_input(data: bytes) -> None:
    with pytest.raises(ValueError):
        canonical.loads(data)


@given(st.binary(max_size=200))
def test_loads_raises_only_value_error(data: bytes) -> None:
    try:
        canonical.loads(data)
    except ValueError:
        pass


def test_readers() -> None:
    assert canonical.as_int(3, "x") == 3
    with pytest.raises(ValueError):
        canonical.as_int(True, "x")
    with pytest.raises(ValueError):
        canonical.as_int(-1, "x")
    with pytest.raises(ValueError):
        canonical.as_bool(0, "x")
    with pytest.raises(ValueError, match="missing field 'b'"):
        canonical.fields({"a": 1}, frozenset({"a", "b"}), "x")
    with pytest.raises(ValueError, match="unknown field"):
        canonical.fields({"a": 1, "c": 2}, frozenset({"a"}), "x")
    assert canonical.as_base64("AAE=", "x") == b"\x00\x01"
    for bad in ("AAE", "AAF=", "AA E=", "AAE=\n", "AA-_"):
        with pytest.raises(ValueError):
            canonical.as_base64(bad, "x")


def test_python_json_agrees_on_the_value() -> None:
    # Another reader must see the same value: plain json.loads is such a reader.
    data = canonical.dumps({"z": ["ü", 1, {"y": None}], "a": False})
    assert json.loads(data) == canonical.loads(data)
