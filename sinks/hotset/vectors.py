"""The value of a memory's vector in the hotset (key: `keys.vector`), binary:

    <version: 32 digits><meta JSON>\\x1e<float16 little-endian vector>

The version is the memory's, so the Lua writer (Lua.VECTORS) compares it with GETRANGE 0 31 and
never lets an older embedding replace a newer one. The meta JSON records the model and dimension
and the fields search filters on before any record is read (type, session, agent, visibility,
event time); JSON holds no raw control character, so the first \\x1e after the version ends it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import orjson

from app.models import VERSION_WIDTH

SEP = b"\x1e"


@dataclass(frozen=True, slots=True)
class VectorMeta:
    model: str
    dim: int
    type: str | None
    session_id: str | None
    agent_id: str | None
    visibility: str
    occurred_ms: int


def encode(version: str, meta: VectorMeta, vector: npt.NDArray[np.float32]) -> bytes:
    if len(version) != VERSION_WIDTH or not version.isdigit():
        raise ValueError(f"version must be {VERSION_WIDTH} digits")
    if vector.shape != (meta.dim,):
        raise ValueError("vector does not have the recorded dimension")
    head = orjson.dumps(
        {
            "m": meta.model,
            "d": meta.dim,
            "t": meta.type,
            "s": meta.session_id,
            "a": meta.agent_id,
            "v": meta.visibility,
            "o": meta.occurred_ms,
        }
    )
    return version.encode() + head + SEP + vector.astype("<f2").tobytes()


def decode(value: bytes) -> tuple[str, VectorMeta, npt.NDArray[np.float16]]:
    """Raises ValueError for a value not in this layout."""
    cut = value.find(SEP, VERSION_WIDTH)
    if cut < 0 or not value[:VERSION_WIDTH].isdigit():
        raise ValueError("not a hotset vector value")
    try:
        h = orjson.loads(value[VERSION_WIDTH:cut])
        meta = VectorMeta(h["m"], int(h["d"]), h["t"], h["s"], h["a"], h["v"], int(h["o"]))
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError("not a hotset vector value") from exc
    vec = np.frombuffer(value, dtype="<f2", offset=cut + 1)
    if vec.shape != (meta.dim,):
        raise ValueError("vector length does not match its recorded dimension")
    return value[:VERSION_WIDTH].decode(), meta, vec
