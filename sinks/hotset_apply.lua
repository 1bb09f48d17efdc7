-- Apply a batch of one tenant's write intents atomically, in order.
-- KEYS[1]: the tenant's stats hash. Every key named in ARGV carries the same {tenant} hash tag,
-- so the whole call stays in one cluster slot. Key names come from app/keys.py via ARGV.
-- ARGV[1]: JSON array of ops {k kind (w write | x delete | d duplicate | p privacy drop |
--   r restore from the warehouse: a write that skips the event ledger and counters), m memory key, v version, j record json, ttl,
--   st state ttl, s score, l ledger key, a active hash, af field, av value, sk superseded memory
--   key, dk dedupe key, dv dedupe value, id memory id, sb superseded_by, t type, ix index keys,
--   c counters}. Versions are fixed-width digit strings: string order is version order, so a
--   replay or an older version never overwrites a newer one. Returns how many ops changed state.
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
      local cur = redis.call('HGET', op.m, 'v')
      if cur and cur >= op.v then
        apply = false
      elseif op.k == 'x' then
        redis.call('HSET', op.m, 'v', op.v, 'j', op.j, 'd', '1')
        redis.call('EXPIRE', op.m, op.st)
      else
        if op.sb ~= '' then
          redis.call('HSET', op.m, 'v', op.v, 'j', op.j, 'sb', op.sb)
        else
          redis.call('HSET', op.m, 'v', op.v, 'j', op.j)
        end
        if cur then redis.call('HDEL', op.m, 'd') end
        redis.call('EXPIRE', op.m, op.ttl)
        for _, ix in ipairs(op.ix) do redis.call('ZADD', ix, op.s, op.id) end
        if op.af ~= '' then
          local a = redis.call('HGET', op.a, op.af)
          if (not a) or a < op.av then
            redis.call('HSET', op.a, op.af, op.av)
            if op.sk ~= '' and redis.call('EXISTS', op.sk) == 1 then
              redis.call('HSET', op.sk, 'sb', op.id)
            end
          end
        end
        if op.dk ~= '' then redis.call('SET', op.dk, op.dv, 'EX', op.st) end
        if not cur and op.k == 'w' then count('type:' .. op.t, 1) end
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
