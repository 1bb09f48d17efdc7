"""The ASGI helpers that need no app: resource ids of a path, query pairs parsed as urllib does."""

from __future__ import annotations

from urllib.parse import parse_qsl

import pytest

from app.auth.asgi import query_pairs, resource_ids


def test_resource_ids() -> None:
    body = {"memory_id": "a", "items": [{"memory_id": "b"}, {"handoff_id": "c"}, "x"], "results": None}
    assert resource_ids({"memory_id": "p"}, [("memory_id", "q"), ("q", "text")], body) == [
        "p",
        "q",
        "a",
        "b",
        "c",
    ]
    assert resource_ids({}, [], [1, 2]) == []


@pytest.mark.parametrize(
    "qs",
    [
        b"",
        b"memory_id=m-1&memory_type=event",
        b"q=kafka+streams&limit=10",
        b"q=%C3%A9t%C3%A9%20x&q=second",  # percent-encoded UTF-8; a repeated name
        b"a&&b=&=c&d=1=2&&",  # no value, empty value, empty name, '=' in the value, empty parts
        b"bad=%E9%ZZ&plus=%2B+",  # invalid escapes are kept or replaced as urllib does
        "raw=café".encode("latin-1") + b"&k;v=1",  # raw non-ASCII bytes; ';' is not a separator
    ],
)
def test_query_pairs_parse_as_urllib_does(qs: bytes) -> None:
    assert query_pairs(qs) == parse_qsl(qs.decode("latin-1"), keep_blank_values=True)
