"""The hotset's memory value: the pure layout (encode, decode, refusals)."""

from __future__ import annotations

import orjson
import pytest

from sinks.hotset import layout as hotset_format

V1, V2 = f"{1:032d}", f"{2:032d}"


def test_round_trip_keeps_every_part() -> None:
    for deleted in (False, True):
        for sb in (None, "m-newer", "ünï\x1e\x1fcode"):  # ids may hold any character
            value = hotset_format.encode(V1, '{"text":"héllo"}', deleted=deleted, superseded_by=sb)
            assert hotset_format.decode(value) == hotset_format.StoredMemory(V1, deleted, '{"text":"héllo"}', sb)
    assert hotset_format.decode(None) is None and hotset_format.decode("") is None


@pytest.mark.parametrize(
    ("version", "record"), [("123", "{}"), ("x" * 32, "{}"), (V1, '{"a":"\x1e"}')], ids=["short", "digits", "sep"]
)
def test_encode_refuses_what_decode_could_not_split(version: str, record: str) -> None:
    with pytest.raises(ValueError):
        hotset_format.encode(version, record)


@pytest.mark.parametrize("value", ["0" * 32 + "2{}\x1e", "0" * 32 + "0{}", "short"])
def test_decode_refuses_other_layouts(value: str) -> None:
    with pytest.raises(ValueError):
        hotset_format.decode(value)


def test_canonical_json_drops_the_index_only_field() -> None:
    rec = '{"memory_id":"m","context_terms":["kafka"],"tenant_id":"t"}'
    assert orjson.loads(hotset_format.canonical_json(rec)) == {"memory_id": "m", "tenant_id": "t"}
    plain = '{"memory_id":"m"}'
    assert hotset_format.canonical_json(plain) is plain
