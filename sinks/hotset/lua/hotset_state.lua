-- Read what the pure planner needs for one tenant's batch, in one call.
-- KEYS[1]: the tenant's stats hash (declares the slot; all keys share the {tenant} hash tag).
-- ARGV[1]: JSON {dd: [dedupe keys], act: active hash key, af: [fields], seen: [ledger keys],
--   cit: [memory keys of cited memories], mem: [memory keys a delete in the batch forgets],
--   prev: [[session index key, score]], mp: memory key prefix, sp: session index key prefix}.
-- Returns JSON {dd: [value or false], af: [value or false], seen: [0|1], cit: [0 absent | 1 live |
--   2 deleted], mem: [value or false], prev: [value of the session's newest memory scored below
--   score, or false], around: [for each mem value that is a live conversation turn: [the value of
--   the next turn of its session, the value of the memory before it] (false where none), or false]}.
local q = cjson.decode(ARGV[1])
local out = {dd = {}, af = {}, seen = {}, cit = {}, mem = {}, prev = {}, around = {}}
local SCAN = 8  -- memories after a deleted turn examined for the next turn of its session
-- The turns around a live turn a delete forgets: the next one lent its words, the one before
-- lends them instead (app.pipeline.plan). Deletes are rare: decoding their records here is cheap.
local function record(value)
  if not value or string.sub(value, 33, 33) ~= '0' then return nil end
  local cut = string.find(value, '\30', 34, true)
  local ok, r = pcall(cjson.decode, string.sub(value, 34, cut and cut - 1 or #value))
  return ok and type(r) == 'table' and r or nil
end
local function around(id, value)
  local r = record(value)
  if not r or r.type ~= 'event' or type(r.session_id) ~= 'string' then return false end
  local ix = q.sp .. r.session_id
  local score = redis.call('ZSCORE', ix, id)
  if not score then return false end
  local nxt = false
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', ix, score, '+inf', 'LIMIT', 0, SCAN)) do
    if m ~= id then
      local v = redis.call('GET', q.mp .. m)
      local n = record(v)
      if n and n.type == 'event' then nxt = v break end
    end
  end
  local before = redis.call('ZREVRANGEBYSCORE', ix, '(' .. score, '-inf', 'LIMIT', 0, 1)
  return {nxt, (before[1] and redis.call('GET', q.mp .. before[1])) or false}
end
for i, k in ipairs(q.dd) do out.dd[i] = redis.call('GET', k) end
for i, f in ipairs(q.af) do out.af[i] = redis.call('HGET', q.act, f) end
for i, k in ipairs(q.seen) do out.seen[i] = redis.call('EXISTS', k) end
for i, k in ipairs(q.cit or {}) do
  local flag = redis.call('GETRANGE', k, 32, 32)
  out.cit[i] = (flag == '0' and 1) or (flag == '1' and 2) or 0
end
for i, k in ipairs(q.mem or {}) do
  out.mem[i] = redis.call('GET', k)
  out.around[i] = q.sp and around(string.sub(k, #q.mp + 1), out.mem[i]) or false
end
for i, p in ipairs(q.prev or {}) do
  local ids = redis.call('ZREVRANGEBYSCORE', p[1], '(' .. p[2], '-inf', 'LIMIT', 0, 1)
  out.prev[i] = (ids[1] and redis.call('GET', q.mp .. ids[1])) or false
end
return cjson.encode(out)
