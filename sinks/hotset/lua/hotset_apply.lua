-- Apply a batch of one tenant's write intents atomically, in order.
-- KEYS[1]: the tenant's stats hash. Every key named in ARGV carries the same {tenant} hash tag,
-- so the whole call stays in one cluster slot. Key names come from sinks/hotset/keys.py via ARGV.
-- ARGV[1]: JSON array of ops {k kind (w write | x delete | d duplicate | p privacy drop |
--   r restore from the warehouse: a write that skips the event ledger and counters, i re-index: a
--   restore that also rewrites the same version), m memory key, v version, j record json, ttl,
--   st state ttl, s score, l ledger key, a active hash, af field, av value, mp memory key prefix,
--   ai active-in-scope index of this memory ('' for none), ax the memory -> that index hash,
--   kh key history ('' without a key), khp key history prefix (deletes), dk dedupe key, dv dedupe
--   value, id memory id, sb superseded_by, t type, ix index keys, rx index keys to leave,
--   c counters, vis visibility, ses session, ag agent, ta handoff recipient; for x, a tombstone:
--   ix and dk name what the forgotten record was indexed under; vk/vx/vm the memory's vector
--   key, the vector index and meta (deletes only)}. Versions are fixed-width digit strings:
--   string order is version order, so a
--   replay or an older version never overwrites a newer one. Returns how many ops changed state.
-- ARGV[2] (optional): the tenant's change feed stream; ARGV[3]: its approximate MAXLEN. Every op
--   that changes a memory appends one entry (created, updated, superseded, deleted,
--   handoff_delivered); a replay changes nothing, so it appends nothing.
-- ARGV[4] (optional): the tenant's standing generation (keys.standing_generation), incremented
--   once per call that may change standing knowledge (a memory of a superseding type written,
--   any memory deleted): gateways cache the standing sections of a context call under it.
-- ARGV[5], ARGV[6] (optional): the tenant's coverage hash (keys.coverage) and, for a call of events
--   from the events topic, '<partition>:<offset>:<ttl>:<now ms>': the hash keeps where this
--   hotset began to hold the tenant ('cover_from': the lowest event offset applied, 'cover_ms':
--   when) and the shortest TTL it stored ('ttl_min'). The gateway reads them to know when the
--   warehouse cannot hold more (docs/adr/0012-hotset-coverage.md).
-- Memory values are one string each (layout: sinks/hotset/layout.py):
--   <version: 32 digits><deleted 0|1><record json>\30<superseded_by>
local SEP = '\30'
local HISTORY_SCAN = 50  -- members of a key's history a delete examines for the next active one
local function sb_of(value)
  local cut = string.find(value, SEP, 34, true)
  return cut and string.sub(value, cut + 1) or ''
end
-- The stored version, or false when the key is absent or holds something not in this layout
-- (then it is overwritten rather than compared).
local function version_of(key)
  local v = redis.call('GETRANGE', key, 0, 31)
  return string.find(v, '^%d+$') and #v == 32 and v
end
local function id_of(pointer)
  local bar = string.find(pointer, '|', 1, true)
  return bar and string.sub(pointer, bar + 1)
end
-- Event time in ms from a version (its first 18 digits are microseconds).
local function score_of(version)
  return math.floor(tonumber(string.sub(version, 1, 18)) / 1000)
end
local ops = cjson.decode(ARGV[1])
local stats = KEYS[1]
local feed = ARGV[2] or ''
local feed_max = ARGV[3] or '10000'
local generation = ARGV[4] or ''
local standing = false
local cover_key, cover = ARGV[5] or '', ARGV[6] or ''
local function str(v) return type(v) == 'string' and v or '' end
-- One feed entry. The record JSON travels only with created/updated/handoff_delivered.
local function emit(kind, id, t, vis, ses, ag, ta, version, sb, rec)
  if feed == '' then return end
  redis.call('XADD', feed, 'MAXLEN', '~', feed_max, '*', 'kind', kind, 'id', id, 'type', t,
    'vis', vis, 'ses', ses, 'ag', ag, 'ta', ta, 'v', version, 'sb', sb, 'rec', rec)
end
-- The scope of a stored record (for a delete or a supersession the op does not carry it). A
-- memory the hotset does not hold is reported as private: only a private-channel read sees it.
local function scope_of(value)
  local cut = value and string.find(value, SEP, 34, true)
  local ok, r = pcall(cjson.decode, cut and string.sub(value, 34, cut - 1) or '')
  if not ok or type(r) ~= 'table' then return '', 'private', '', '', '' end
  local ta = ''
  if type(r.content) == 'table' then ta = str(r.content.to_agent) end
  return str(r.type), str(r.visibility) ~= '' and r.visibility or 'private', str(r.session_id), str(r.agent_id), ta
end
local changed = 0
-- Index additions (op.ix) are buffered per key and written with one ZADD per key: a call per
-- member costs Redis more than the member itself. Flushed before anything leaves an index named
-- in op.ix (a delete, op.rx), so additions and removals keep their order, and at the end.
local pending, pending_keys = {}, {}
local function add(key, score, member)
  local p = pending[key]
  if not p then
    p = {}
    pending[key] = p
    pending_keys[#pending_keys + 1] = key
  end
  p[#p + 1] = score
  p[#p + 1] = member
end
local function flush()
  for _, key in ipairs(pending_keys) do
    local p = pending[key]
    for c = 1, #p, 4000 do redis.call('ZADD', key, unpack(p, c, math.min(c + 3999, #p))) end
  end
  pending, pending_keys = {}, {}
end
local counts = {}  -- stats increments, written once per call: a redis.call costs more than a table
local function count(name, inc) counts[name] = (counts[name] or 0) + inc end

-- The active memory of `field` was deleted: the newest remaining live memory of the key becomes
-- active (its superseded marker cleared, back in its scope index), or the key has none.
local function reactivate(op, field, history, gone)
  redis.call('HDEL', op.a, field)
  for _, member in ipairs(redis.call('ZREVRANGE', history, 0, HISTORY_SCAN - 1)) do
    local bar = string.find(member, '|', 1, true)
    local v, mid = string.sub(member, 1, bar - 1), string.sub(member, bar + 1)
    if mid ~= gone then
      local mkey = op.mp .. mid
      local head = redis.call('GETRANGE', mkey, 0, 32)
      if #head == 33 and string.sub(head, 1, 32) == v and string.sub(head, 33, 33) == '0' then
        redis.call('HSET', op.a, field, v .. '|' .. mid)
        local value = redis.call('GET', mkey)
        local cut = string.find(value, SEP, 34, true)
        if cut and cut < #value then redis.call('SET', mkey, string.sub(value, 1, cut), 'KEEPTTL') end
        local ix = redis.call('HGET', op.ax, mid)
        if ix and ix ~= '' then redis.call('ZADD', ix, score_of(v), mid) end
        count('reactivated', 1)
        return
      end
      -- expired, deleted or an older version of a memory written again: never active again
      redis.call('ZREM', history, member)
    end
  end
end

-- A deleted memory leaves its scope index; when it was its key's active memory (prev: the live
-- value the delete replaces, if the hotset still held it), the key's next one takes its place.
local function forget(op, prev)
  local ix = redis.call('HGET', op.ax, op.id)
  if ix then
    if ix ~= '' then redis.call('ZREM', ix, op.id) end
    redis.call('HDEL', op.ax, op.id)
  end
  if not prev or string.sub(prev, 33, 33) ~= '0' then return end
  local cut = string.find(prev, SEP, 34, true)
  local ok, rec = pcall(cjson.decode, string.sub(prev, 34, cut and cut - 1 or #prev))
  if not ok or type(rec) ~= 'table' or type(rec.type) ~= 'string' or type(rec.key) ~= 'string' then return end
  local field = rec.type .. '\31' .. rec.key
  local history = op.khp .. field
  redis.call('ZREM', history, string.sub(prev, 1, 32) .. '|' .. op.id)
  local a = redis.call('HGET', op.a, field)
  if a and id_of(a) == op.id then reactivate(op, field, history, op.id) end
end

for _, op in ipairs(ops) do
  -- The event id is the idempotency key: an event already applied changes nothing.
  if op.k == 'r' or op.k == 'i' or redis.call('SET', op.l, '1', 'NX', 'EX', op.st) then
    local apply = true
    if op.k == 'w' or op.k == 'x' or op.k == 'r' or op.k == 'i' then
      local cur = version_of(op.m)
      -- This very version already stored by a gateway re-warm (a warehouse read racing the
      -- worker, or a cold read before a rebuild): the value stands, but only this event's write
      -- or the rebuild's restore indexes it (index writes are idempotent).
      local complete = (op.k == 'w' or op.k == 'r' or op.k == 'i') and cur == op.v
      -- A re-index (memstream rebuild --reindex) rewrites the live value of this very version
      -- with its index fields, keeping its TTL and superseded marker.
      local reindex = op.k == 'i' and cur == op.v and redis.call('GETRANGE', op.m, 32, 32) == '0'
      if reindex then
        local prev = redis.call('GET', op.m)
        local sb = op.sb
        if sb == '' then sb = sb_of(prev) end
        redis.call('SET', op.m, op.v .. '0' .. op.j .. SEP .. sb, 'KEEPTTL')
      elseif cur and cur >= op.v then
        apply = false
      else
        -- Once superseded, a memory stays superseded: a newer version keeps the old marker.
        local sb = op.sb
        local prev = cur and redis.call('GET', op.m)
        if sb == '' and prev then sb = sb_of(prev) end
        if op.k == 'x' then
          redis.call('SET', op.m, op.v .. '1' .. op.j .. SEP .. sb, 'EX', op.st)
          standing = true
          forget(op, prev)
          -- Everything else derived from the record the tombstone replaces goes too: its index
          -- members and keyword postings (op.ix) and its dedupe entry, if it names this memory.
          flush()
          for _, ix in ipairs(op.ix) do redis.call('ZREM', ix, op.id) end
          if op.dk ~= '' then
            local d = redis.call('GET', op.dk)
            if d and string.sub(d, -(#op.id + 1)) == '|' .. op.id then redis.call('DEL', op.dk) end
          end
          local t, vis, ses, ag, ta = scope_of(prev)
          emit('deleted', op.id, t, vis, ses, ag, ta, op.v, sb, '')
          -- A deleted memory's vector goes with it, whether or not the embedding agent caught up.
          if op.vk and op.vk ~= '' then
            redis.call('DEL', op.vk)
            if redis.call('ZREM', op.vx, op.id) == 1 then redis.call('HINCRBY', op.vm, 'del', 1) end
          end
        else
          redis.call('SET', op.m, op.v .. '0' .. op.j .. SEP .. sb, 'EX', op.ttl)
          if op.k == 'w' then
            local kind = cur and 'updated' or (op.t == 'handoff' and 'handoff_delivered' or 'created')
            emit(kind, op.id, op.t, op.vis or 'private', op.ses or '', op.ag or '', op.ta or '', op.v, sb, op.j)
          end
        end
      end
      if (apply or complete or reindex) and op.k ~= 'x' then
        for _, ix in ipairs(op.ix) do add(ix, op.s, op.id) end
        if #op.rx > 0 then flush() end
        for _, ix in ipairs(op.rx) do redis.call('ZREM', ix, op.id) end
        if op.af ~= '' then
          standing = true
          redis.call('ZADD', op.kh, 0, op.v .. '|' .. op.id)
          local before = redis.call('HGET', op.ax, op.id)
          redis.call('HSET', op.ax, op.id, op.ai)
          local a = redis.call('HGET', op.a, op.af)
          if op.av ~= '' and ((not a) or a < op.av) then
            redis.call('HSET', op.a, op.af, op.av)
            local old = a and id_of(a)
            if old and old ~= op.id then
              -- The key's previous active memory (whatever the planner saw) is superseded.
              local oldix = redis.call('HGET', op.ax, old)
              if oldix and oldix ~= '' then redis.call('ZREM', oldix, old) end
              local sk = op.mp .. old
              local older = version_of(sk) and redis.call('GET', sk)
              local cut = older and string.find(older, SEP, 34, true)
              if cut then
                redis.call('SET', sk, string.sub(older, 1, cut) .. op.id, 'KEEPTTL')
                if op.k == 'w' then
                  local t, vis, ses, ag, ta = scope_of(older)
                  emit('superseded', old, t, vis, ses, ag, ta, string.sub(older, 1, 32), op.id, '')
                end
              end
            end
            if before and before ~= '' and before ~= op.ai then redis.call('ZREM', before, op.id) end
            if op.ai ~= '' then redis.call('ZADD', op.ai, op.s, op.id) end
          end
        end
        if op.dk ~= '' then redis.call('SET', op.dk, op.dv, 'EX', op.st) end
        if apply and not cur and op.k == 'w' then count('type:' .. op.t, 1) end
      end
    end
    if apply then
      for name, inc in pairs(op.c) do count(name, inc) end
      changed = changed + 1
    end
  end
end
flush()
for name, inc in pairs(counts) do redis.call('HINCRBY', stats, name, inc) end
if cover_key ~= '' and cover ~= '' then
  local part, off, ttl, now = string.match(cover, '^(%d+):(%d+):(%d+):(%d+)$')
  if part then
    local from = redis.call('HMGET', cover_key, 'cover_from', 'ttl_min')
    local fpart, foff = string.match(from[1] or '', '^(%d+):(%d+)$')
    -- A replay from an earlier committed offset re-applies everything after it: cover from there.
    if not fpart or (fpart == part and tonumber(off) < tonumber(foff)) then
      redis.call('HSET', cover_key, 'cover_from', part .. ':' .. off)
      if not fpart then redis.call('HSET', cover_key, 'cover_ms', now) end
    end
    if not from[2] or tonumber(ttl) < tonumber(from[2]) then redis.call('HSET', cover_key, 'ttl_min', ttl) end
  end
end
if standing and generation ~= '' then redis.call('INCR', generation) end
return changed
