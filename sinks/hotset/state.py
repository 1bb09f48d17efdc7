"""The hotset state the pure planner (app.pipeline.plan) reads: dedupe and active-pointer entries
and the event ledger, as plain values. Pure: the writer fills a HotsetState from one script call
per tenant (Lua.STATE) and the planner updates it in place as it decides.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from app.models import MemoryRecord


@dataclass(frozen=True)
class DedupeEntry:
    """Value of a dedupe key (`keys.dedupe`): '<occurred_at in µs>|<memory_id>'."""

    memory_id: str
    occurred_us: int

    def encode(self) -> str:
        return f"{self.occurred_us}|{self.memory_id}"

    @classmethod
    def decode(cls, raw: str) -> DedupeEntry:
        occ, _, mid = raw.partition("|")
        return cls(memory_id=mid, occurred_us=int(occ))


@dataclass(frozen=True)
class ActiveEntry:
    """Value of a field of the active hash (`keys.active`): '<version>|<memory_id>'."""

    version: str
    memory_id: str

    def encode(self) -> str:
        return f"{self.version}|{self.memory_id}"

    @classmethod
    def decode(cls, raw: str) -> ActiveEntry:
        v, _, mid = raw.partition("|")
        return cls(version=v, memory_id=mid)


@dataclass(frozen=True)
class TurnNeighbours:
    """The turns around a conversation turn a delete forgets: the next turn of its session, which
    was indexed with the forgotten turn's words, and the text of the memory before it, which lends
    its words instead."""

    following: MemoryRecord | None
    following_context: tuple[str, ...]  # the terms the next turn holds from the forgotten one
    before_text: str
    before_visibility: str


MemoryState = Literal["absent", "live", "deleted"]
CITED_STATE: tuple[MemoryState, ...] = ("absent", "live", "deleted")  # as the STATE script codes them


@dataclass
class HotsetState:
    """What `plan` needs to know of the hotset, keyed by (tenant, digest) and (tenant, field)."""

    dedupe: dict[tuple[str, str], DedupeEntry] = field(default_factory=dict)
    active: dict[tuple[str, str], ActiveEntry] = field(default_factory=dict)
    seen: set[tuple[str, str]] = field(default_factory=set)  # (tenant, event_id) already applied
    # (tenant, memory id) -> state of the memories summaries of the batch cite
    memories: dict[tuple[str, str], MemoryState] = field(default_factory=dict)
    # (tenant, memory_id) -> the live record a delete in the batch forgets (read for deletes only)
    stored: dict[tuple[str, str], MemoryRecord] = field(default_factory=dict)
    # (tenant, memory_id) -> of those, the contextual terms a forgotten turn was indexed under
    stored_context: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)
    # (tenant, memory_id) -> of those, the turns around a forgotten conversation turn
    neighbours: dict[tuple[str, str], TurnNeighbours] = field(default_factory=dict)
    # (tenant, session) -> (text, visibility) of the session's newest memory before the batch (its
    # previous turn for contextual indexing); the planner moves it along as it writes the batch's turns
    previous_turn: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)

    def carry(self, ahead: HotsetState) -> None:
        """Lay over what the hotset returned the state a previous batch's plan left (`ahead`, see
        `app.pipeline.carried_state`) while that batch's hotset write is still under way: it is newer."""
        self.dedupe.update(ahead.dedupe)
        self.active.update(ahead.active)
        self.seen |= ahead.seen
        self.memories.update(ahead.memories)
        self.previous_turn.update(ahead.previous_turn)
