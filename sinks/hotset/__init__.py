"""The Redis hotset in one place.

- `keys`: every Redis key name and prefix (tenant-tagged for one cluster slot per tenant).
- `layout`: the value of a memory (`StoredMemory`, `encode`, `decode`).
- `state`: the state entries the pure planner reads (`HotsetState`, `DedupeEntry`, `ActiveEntry`).
- `scripts`: the one loader of the Lua scripts in lua/ (`Lua`, `script`).
- `writer`: the sink's adapter (`Hotset`): reads planner state, applies intents.
"""

from sinks.hotset import keys, layout
from sinks.hotset.layout import StoredMemory
from sinks.hotset.scripts import Lua, script
from sinks.hotset.state import ActiveEntry, DedupeEntry, HotsetState
from sinks.hotset.writer import Hotset

__all__ = [
    "ActiveEntry",
    "DedupeEntry",
    "Hotset",
    "HotsetState",
    "Lua",
    "StoredMemory",
    "keys",
    "layout",
    "script",
]
