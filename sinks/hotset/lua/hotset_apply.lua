-- Apply a batch of one tenant's write intents atomically, in order.
-- KEYS[1]: the tenant's stats hash. Every key named in ARGV carries the same {tenant} hash tag,
-- so the whole call stays in one cluster slot. Key names come from sinks/hotset/keys.py via ARGV.
-- ARGV[1]: JSON array of ops {k kind (w write | x delete | d duplicate | p privacy drop |
--   r restore from the warehouse: a write that skips the event ledger and counters), m memory key, v version, j record json, ttl,
--   st state ttl, s score, l ledger key, a active hash, af field, av value, sk superseded memory
--   key, dk dedupe key, dv dedupe value, id memory id, sb superseded_by, t type, ix index keys,
--   c counters}. Versions are fixed-width digit strings: string order is version order, so a
--   replay or an older version never overwrites a newer one. Returns how many ops changed state.
-- Memory values are one string each (layout: sinks/hotset/layout.py):
--   <version: 32 digits><deleted 0|1><record json>\30<superseded_by>
local SEP = '\30'
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
local ops = cjson.decode(ARGV[1])
local stats = KEYS[1]
local changed = 0
local counts = {}  -- stats increments, written once per call: a redis.call costs more than a table
local function count(name, inc) counts[name] = (counts[name] or 0) + inc end
for _, op in ipairs(ops) do
  -- The event id is the idempotency key: an event already applied changes nothing.
  if op.k == 'r' or redis.call('SET', op.l, '1', 'NX', 'EX', op.st) then
    local apply = true
    if op.k == 'w' or op.k == 'x' or op.k == 'r' then
      local cur = version_of(op.m)
      -- This very version already stored by a gateway re-warm (a warehouse read racing the
      -- worker): the value stands, but only this event's write indexes it.
      local complete = op.k == 'w' and cur == op.v
      if cur and cur >= op.v then
        apply = false
      else
        -- Once superseded, a memory stays superseded: a newer version keeps the old marker.
        local sb = op.sb
        if sb == '' and cur then sb = sb_of(redis.call('GET', op.m)) end
        if op.k == 'x' then
          redis.call('SET', op.m, op.v .. '1' .. op.j .. SEP .. sb, 'EX', op.st)
        else
          redis.call('SET', op.m, op.v .. '0' .. op.j .. SEP .. sb, 'EX', op.ttl)
        end
      end
      if (apply or complete) and op.k ~= 'x' then
        for _, ix in ipairs(op.ix) do redis.call('ZADD', ix, op.s, op.id) end
        if op.af ~= '' then
          local a = redis.call('HGET', op.a, op.af)
          if (not a) or a < op.av then
            redis.call('HSET', op.a, op.af, op.av)
            if op.sk ~= '' then
              local older = version_of(op.sk) and redis.call('GET', op.sk)
              local cut = older and string.find(older, SEP, 34, true)
              if cut then redis.call('SET', op.sk, string.sub(older, 1, cut) .. op.id, 'KEEPTTL') end
            end
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
for name, inc in pairs(counts) do redis.call('HINCRBY', stats, name, inc) end
return changed
