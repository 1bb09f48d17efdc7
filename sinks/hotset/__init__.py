"""The Redis hotset in one place.

- `keys`: every Redis key name and prefix (tenant-tagged for one cluster slot per tenant).
- `layout`: the value of a memory (`StoredMemory`, `encode`, `decode`).
- `state`: the state entries the pure planner reads (`HotsetState`, `DedupeEntry`, `ActiveEntry`).
- `scripts`: the one loader of the Lua scripts in lua/ (`Lua`, `script`).
- `vectors`: the value of a memory's vector (`encode`, `decode`).
- `writer`: the sink's adapter (`Hotset`): reads planner state, applies intents; the embedding
  agent's (`VectorWriter`).
"""

from sinks.hotset import keys, layout, vectors
from sinks.hotset.layout import StoredMemory
from sinks.hotset.scripts import Lua, script
from sinks.hotset.state import ActiveEntry, DedupeEntry, HotsetState, TurnNeighbours
from sinks.hotset.writer import ApplyCall, Hotset, VectorOp, VectorWriter

__all__ = [
    "ActiveEntry",
    "ApplyCall",
    "DedupeEntry",
    "Hotset",
    "HotsetState",
    "Lua",
    "StoredMemory",
    "TurnNeighbours",
    "VectorOp",
    "VectorWriter",
    "keys",
    "layout",
    "script",
    "vectors",
]
