"""Exact vector search over a tenant's memories, from the hotset's vectors (sinks/hotset/vectors.py).

Redis holds each memory's vector (float16, with the fields search filters on); a gateway keeps a
tenant's vectors as one float32 matrix in a bounded cache (`vector_cache_max_bytes`, least
recently used tenant out first), so any gateway answers any tenant. Each search checks the
tenant's vector meta hash in one round trip: an unchanged `seq` means the matrix is current; a
grown `seq` fetches only the vectors written since (the index is scored by `seq`); removals past
a tenth of the rows reload the whole tenant. A row whose memory was deleted in between is still
dropped: search reads each candidate's record and filters it (`search.passes`).

`top` scores every row with one matrix-vector product after masking rows by the static filters
(type, session, agent, visibility, model; held as integer codes): exact, no recall to lose.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import redis.asyncio as aioredis

from app.gateway.visibility import allowed
from app.models import Visibility
from sinks.hotset import keys, vectors

log = logging.getLogger(__name__)

FETCH_CHUNK = 2000  # vectors per MGET on a (re)load
RELOAD_REMOVED_SHARE = 0.1


VISIBILITIES = ("public", "internal", "private")
_VIS_CODE = {v: i for i, v in enumerate(VISIBILITIES)}


def _grow(a: npt.NDArray[Any], size: int) -> npt.NDArray[Any]:
    out = np.zeros((size, *a.shape[1:]), dtype=a.dtype)
    out[: a.shape[0]] = a
    return out


class TenantVectors:
    """One tenant's vectors as rows of a float32 matrix, with the filter fields as arrays."""

    def __init__(self, model: str, dim: int, seq: int = 0, removed: int = 0) -> None:
        self.model, self.dim, self.seq, self.removed = model, dim, seq, removed
        self.ids: list[str] = []
        self.pos: dict[str, int] = {}
        self.rows = 0
        self.matrix = np.zeros((0, dim), dtype=np.float32)
        # The filter fields as integer codes (`_codes`: value -> code, per field): comparing an
        # int32 column costs a fraction of comparing Python strings row by row.
        self.types = np.zeros(0, dtype=np.int32)
        self.sessions = np.zeros(0, dtype=np.int32)
        self.agents = np.zeros(0, dtype=np.int32)
        self._codes: tuple[dict[str | None, int], dict[str | None, int], dict[str | None, int]] = ({}, {}, {})
        self.vis = np.zeros(0, dtype=np.int8)
        # recorded with this gateway's model and dimension (other rows wait for `memstream reembed`)
        self.usable = np.zeros(0, dtype=bool)
        self.unusable = 0  # rows not usable: with none, an unfiltered search needs no mask

    @property
    def nbytes(self) -> int:
        return int(self.matrix.nbytes) + 150 * self.matrix.shape[0]

    def upsert(self, memory_id: str, value: bytes) -> None:
        try:
            _, meta, vec = vectors.decode(value)
        except ValueError:
            log.warning("hotset vector of %s is not in the vector layout: skipped", memory_id)
            return
        i = self.pos.get(memory_id)
        was_usable = True  # a new row counts as usable until set below
        if i is None:
            i = self.rows
            if i >= self.matrix.shape[0]:
                size = max(64, 2 * self.matrix.shape[0])
                self.matrix = _grow(self.matrix, size)
                self.types, self.sessions = _grow(self.types, size), _grow(self.sessions, size)
                self.agents, self.vis = _grow(self.agents, size), _grow(self.vis, size)
                self.usable = _grow(self.usable, size)
            self.pos[memory_id] = i
            self.ids.append(memory_id)
            self.rows += 1
        else:
            was_usable = bool(self.usable[i])
        usable = meta.model == self.model and meta.dim == self.dim
        types, sessions, agents = self._codes
        self.types[i] = types.setdefault(meta.type, len(types))
        self.sessions[i] = sessions.setdefault(meta.session_id, len(sessions))
        self.agents[i] = agents.setdefault(meta.agent_id, len(agents))
        self.vis[i] = _VIS_CODE.get(meta.visibility, _VIS_CODE["private"])
        self.usable[i] = usable
        self.unusable += int(was_usable) - int(usable)
        self.matrix[i] = vec if usable else 0.0

    def top(
        self,
        query: npt.NDArray[np.float32],
        k: int,
        *,
        type: str | None = None,
        session_id: str | None = None,
        agent_id: str | None = None,
        channel_visibility: Visibility | None = None,
    ) -> tuple[list[tuple[str, float]], int]:
        """The k best rows by cosine (vectors are unit length) among those the filters allow, and
        how many rows were scored."""
        n = self.rows
        if not n or k <= 0:
            return [], 0
        ok = allowed(channel_visibility)
        wanted: list[tuple[npt.NDArray[np.int32], int]] = []
        columns = (self.types, self.sessions, self.agents)
        for col, codes, value in zip(columns, self._codes, (type, session_id, agent_id), strict=True):
            if value is not None:
                code = codes.get(value)
                if code is None:
                    return [], 0  # a value no row holds
                wanted.append((col, code))
        if not wanted and not self.unusable and len(ok) == len(VISIBILITIES):
            # Nothing to leave out: one product over every row, no mask.
            scores = self.matrix[:n] @ query
            best = _best(scores, min(k, n))
            return self._named(best, scores[best]), n
        mask = self.usable[:n].copy()
        if len(ok) < len(VISIBILITIES):
            mask &= np.isin(self.vis[:n], [_VIS_CODE[v] for v in ok])
        for col, code in wanted:
            mask &= col[:n] == code
        idx = np.flatnonzero(mask)
        if not idx.size:
            return [], 0
        k = min(k, idx.size)
        if idx.size * 4 < n:  # a selective filter: score only the rows it allows
            scores = self.matrix[idx] @ query
            best = _best(scores, k)
            return self._named(idx[best], scores[best]), int(idx.size)
        # Otherwise one product over every row (no copy of the matrix), the others masked out.
        scores = self.matrix[:n] @ query
        if idx.size < n:
            scores[~mask] = -np.inf
        best = _best(scores, k)
        return self._named(best, scores[best]), int(idx.size)

    def _named(self, rows: npt.NDArray[np.intp], scores: npt.NDArray[np.float32]) -> list[tuple[str, float]]:
        ids = self.ids
        return [(ids[r], s) for r, s in zip(rows.tolist(), scores.tolist(), strict=True)]


SAMPLE = 4096  # scores sampled to guess the k-th best (`_best`)


def _best(scores: npt.NDArray[np.float32], k: int) -> npt.NDArray[np.intp]:
    """Indexes of k highest scores, highest first (equal scores: lower index first; which of
    the rows tied at the k-th score are kept is unspecified, as with a plain partition). Exact: a
    threshold guessed from an evenly spaced sample keeps a few times k rows, which are then
    partitioned; when fewer than k pass it, every row is. (A partition of 100k scores cost 3.6 ms
    on the loaded 2-core host, the comparison and the small partition ~0.3 ms.)"""
    n = scores.shape[0]
    top: npt.NDArray[np.intp] | None = None
    if k >= n:
        top = np.arange(n)
    else:
        if n > 4 * SAMPLE and k * 8 < n:
            sample = scores[:: n // SAMPLE]
            # a sample rank whose share of the sample is ~4x k's share of all rows
            r = min(sample.shape[0] - 1, max(1, (4 * k * sample.shape[0]) // n))
            threshold = np.partition(sample, sample.shape[0] - r)[sample.shape[0] - r]
            kept = np.flatnonzero(scores >= threshold)
            if kept.shape[0] >= k:
                part = np.argpartition(scores[kept], kept.shape[0] - k)[kept.shape[0] - k :]
                top = kept[part]
        if top is None:
            top = np.argpartition(scores, n - k)[n - k :]
    assert top is not None
    order = np.lexsort((top, -scores[top]))
    out: npt.NDArray[np.intp] = top[order]
    return out


class VectorCache:
    """Per-gateway tenant matrices, bounded in bytes; `get` brings one up to date first."""

    def __init__(self, redis: aioredis.Redis, model: str, dim: int, max_bytes: int) -> None:
        self.redis = redis  # decode_responses=False: vectors are binary
        self.model, self.dim, self.max_bytes = model, dim, max_bytes
        self._tenants: OrderedDict[str, TenantVectors] = OrderedDict()
        # One lock per tenant being brought up to date; held only by the searches using it, so
        # a tenant's lock goes when its last search does (one per tenant ever seen otherwise).
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self._tenants.values())

    async def get(self, tenant: str) -> TenantVectors:
        lock = self._locks.get(tenant)
        if lock is None:
            lock = self._locks[tenant] = asyncio.Lock()
        async with lock:
            seq, removed = await self._meta(tenant)
            cached = self._tenants.get(tenant)
            if cached is not None and cached.seq == seq and cached.removed == removed:
                self._tenants.move_to_end(tenant)
                return cached
            if cached is None or (removed - cached.removed) > RELOAD_REMOVED_SHARE * max(cached.rows, 1):
                tv = await self._load(tenant, seq, removed)
            else:
                tv = cached
                await self._catch_up(tenant, tv, seq, removed)
            self._keep(tenant, tv)
            return tv

    async def _meta(self, tenant: str) -> tuple[int, int]:
        raw: list[bytes | None] = await self.redis.hmget(keys.vector_meta(tenant), ["seq", "del"])  # type: ignore[misc]
        return int(raw[0] or 0), int(raw[1] or 0)

    async def _load(self, tenant: str, seq: int, removed: int) -> TenantVectors:
        tv = TenantVectors(self.model, self.dim, seq, removed)
        members: list[bytes] = await self.redis.zrangebyscore(keys.vector_index(tenant), "-inf", seq)
        await self._fetch(tenant, tv, [m.decode() for m in members])
        return tv

    async def _catch_up(self, tenant: str, tv: TenantVectors, seq: int, removed: int) -> None:
        members: list[bytes] = await self.redis.zrangebyscore(keys.vector_index(tenant), f"({tv.seq}", seq)
        await self._fetch(tenant, tv, [m.decode() for m in members])
        tv.seq, tv.removed = seq, removed

    async def _fetch(self, tenant: str, tv: TenantVectors, ids: Sequence[str]) -> None:
        prefix = keys.vector(tenant, "")
        for start in range(0, len(ids), FETCH_CHUNK):
            chunk = ids[start : start + FETCH_CHUNK]
            values: list[bytes | None] = await self.redis.mget([prefix + mid for mid in chunk])
            for mid, value in zip(chunk, values, strict=True):
                if value:
                    tv.upsert(mid, value)

    def _keep(self, tenant: str, tv: TenantVectors) -> None:
        self._tenants.pop(tenant, None)
        if tv.nbytes > self.max_bytes:
            return  # larger than the whole budget: used for this search only
        self._tenants[tenant] = tv
        while self.nbytes > self.max_bytes and len(self._tenants) > 1:
            self._tenants.popitem(last=False)
