"""Redis key names and prefixes: the one place that knows them.

Every key of a tenant carries the tenant in a hash tag (`{tenant}`) so that a multi-key script
touches one cluster slot.
"""

from __future__ import annotations

PREFIX = "ms"


def _t(tenant: str) -> str:
    return f"{PREFIX}:{{{tenant}}}"


def memory(tenant: str, memory_id: str) -> str:
    """String: version, deleted flag, record JSON and superseded_by (layout: sinks/hotset/layout.py).
    The segment is `mem`, distinct from the hash layout's `m`, so a hash-layout hotset is never misread."""
    return f"{_t(tenant)}:mem:{memory_id}"


def seen(tenant: str, event_id: str) -> str:
    """Event-id ledger: counters move once per event, however often it is replayed."""
    return f"{_t(tenant)}:seen:{event_id}"


def stats(tenant: str) -> str:
    return f"{_t(tenant)}:stats"


def coverage(tenant: str) -> str:
    """Hash: where this hotset began to hold the tenant ('cover_from' '<partition>:<offset>',
    'cover_ms') and the shortest TTL it stored ('ttl_min'): app/gateway/coverage.py."""
    return f"{_t(tenant)}:coverage"


def active(tenant: str) -> str:
    """Hash: '<type>\\x1f<key>' -> '<version>|<memory_id>' of the active (newest) memory."""
    return f"{_t(tenant)}:active"


def active_field(memory_type: str, key: str) -> str:
    return f"{memory_type}\x1f{key}"


def write_seq(tenant: str) -> str:
    """Counter: the tenant's accepted writes; write answers number them (never Kafka offsets)."""
    return f"{_t(tenant)}:wseq"


def scope(agent_id: str | None, session_id: str | None) -> str:
    """The scope a memory applies to: its session, else its agent, else the whole tenant."""
    if session_id:
        return f"s:{session_id}"
    if agent_id:
        return f"a:{agent_id}"
    return "t"


def active_in_scope(tenant: str, memory_type: str, scope_token: str) -> str:
    """Sorted set (score = occurred_at ms): the active memories of one type and scope (context)."""
    return f"{_t(tenant)}:act:{memory_type}:{scope_token}"


def active_index_of(tenant: str) -> str:
    """Hash: memory id -> the active_in_scope key it belongs to while active ('' for none: a done
    task); lets the sink move a key's active memory between scopes."""
    return f"{_t(tenant)}:actix"


def key_history(tenant: str, field: str) -> str:
    """Sorted set of '<version>|<memory_id>' (lexicographic) of every memory written for one
    (type, key): a delete of the active one makes the newest remaining one active again."""
    return f"{_t(tenant)}:kh:{field}"


def summaries_in_scope(tenant: str, scope_token: str) -> str:
    """Summaries by recency, per scope (a session's and its agent's; unscoped ones under 't')."""
    return f"{_t(tenant)}:ix:sum:{scope_token}"


def handoffs_pending(tenant: str, agent_id: str) -> str:
    """Handoffs to an agent not yet acknowledged, by recency (the inbox pages over it)."""
    return f"{_t(tenant)}:ix:handoff-pending:{agent_id}"


def dedupe(tenant: str, digest: str) -> str:
    return f"{_t(tenant)}:dd:{digest}"


# Recency indexes (sorted sets, score = occurred_at in epoch milliseconds, member = memory id).
def recent(tenant: str) -> str:
    return f"{_t(tenant)}:ix:all"


def by_type(tenant: str, memory_type: str) -> str:
    return f"{_t(tenant)}:ix:type:{memory_type}"


def standing_generation(tenant: str) -> str:
    """Counter: incremented by every write that may change the tenant's standing knowledge
    (identity, rules, decisions, tasks); a gateway's cached standing sections carry it."""
    return f"{_t(tenant)}:gen:standing"


def by_session(tenant: str, session_id: str) -> str:
    return f"{_t(tenant)}:ix:session:{session_id}"


def by_agent(tenant: str, agent_id: str) -> str:
    return f"{_t(tenant)}:ix:agent:{agent_id}"


def handoffs_to(tenant: str, agent_id: str) -> str:
    return f"{_t(tenant)}:ix:handoff:{agent_id}"


def term(tenant: str, token: str) -> str:
    """Keyword postings: memories whose text holds `token`, by recency."""
    return f"{_t(tenant)}:kw:{token}"


def feed(tenant: str) -> str:
    """Stream: the tenant's change feed (created, updated, superseded, deleted, handoff delivered),
    written by the hotset write, trimmed to about MEMSTREAM_FEED_MAX_LEN entries, read by
    GET /api/v2/subscribe. Entry ids are the SSE event ids."""
    return f"{_t(tenant)}:feed"


# Vectors (the embedding agent; layout: sinks/hotset/vectors.py).
def vector(tenant: str, memory_id: str) -> str:
    """String: version, model, filter fields and float16 vector of one memory (same TTL as the memory)."""
    return f"{_t(tenant)}:vec:{memory_id}"


def vector_index(tenant: str) -> str:
    """Sorted set: memory ids with a vector, score = the tenant's vector sequence at their write."""
    return f"{_t(tenant)}:vx"


def vector_meta(tenant: str) -> str:
    """Hash: `seq` (vector writes) and `del` (vector removals): gateways' caches compare them."""
    return f"{_t(tenant)}:vmeta"


GLOBAL_STATS = f"{PREFIX}:global:stats"
# Present while the hotset holds what the warehouse holds: set by a complete `memstream rebuild`
# and by readiness on a fresh deployment (empty warehouse); a flushed Redis loses it.
WARM_MARKER = f"{PREFIX}:global:warm"


# Security (app/auth). API keys are looked up globally by their public prefix (the credential
# carries no tenant until it is verified); the per-tenant index only serves `keys list`.
def api_key(prefix: str) -> str:
    """Hash: tenant, roles, agent_id, name, hash, alg, created_at, expires_at, revoked, revoked_at."""
    return f"{PREFIX}:apikey:{prefix}"


def api_key_unknown(prefix: str) -> str:
    """Negative cache: a key id found neither in Redis nor in the warehouse (expires)."""
    return f"{PREFIX}:apikey-unknown:{prefix}"


def api_keys_of(tenant: str) -> str:
    """Set of the key prefixes issued to a tenant."""
    return f"{_t(tenant)}:apikeys"


def rate_bucket_principal(tenant: str, principal_id: str) -> str:
    """Token bucket of one credential; tenant-tagged so both buckets share a cluster slot."""
    return f"{_t(tenant)}:rl:p:{principal_id}"


def rate_bucket_tenant(tenant: str) -> str:
    return f"{_t(tenant)}:rl:t"


def signature_seen(digest: str) -> str:
    """Replay guard of signed requests: one key per signature, expiring with the window."""
    return f"{PREFIX}:sig:{digest}"


def handoff_ack(tenant: str, memory_id: str) -> str:
    """String (SET NX): the handoff was acknowledged; makes the ack exactly-once (gateway)."""
    return f"{_t(tenant)}:ack:{memory_id}"
