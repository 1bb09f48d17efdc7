-- Read what the pure planner needs for one tenant's batch, in one call.
-- KEYS[1]: the tenant's stats hash (declares the slot; all keys share the {tenant} hash tag).
-- ARGV[1]: JSON {dd: [dedupe keys], act: active hash key, af: [fields], seen: [ledger keys],
--   cit: [memory keys of cited memories], mem: [memory keys a delete in the batch forgets],
--   prev: [[session index key, score]], mp: memory key prefix}.
-- Returns JSON {dd: [value or false], af: [value or false], seen: [0|1], cit: [0 absent | 1 live |
--   2 deleted], mem: [value or false], prev: [value of the session's newest memory scored below
--   score, or false]}.
local q = cjson.decode(ARGV[1])
local out = {dd = {}, af = {}, seen = {}, cit = {}, mem = {}, prev = {}}
for i, k in ipairs(q.dd) do out.dd[i] = redis.call('GET', k) end
for i, f in ipairs(q.af) do out.af[i] = redis.call('HGET', q.act, f) end
for i, k in ipairs(q.seen) do out.seen[i] = redis.call('EXISTS', k) end
for i, k in ipairs(q.cit or {}) do
  local flag = redis.call('GETRANGE', k, 32, 32)
  out.cit[i] = (flag == '0' and 1) or (flag == '1' and 2) or 0
end
for i, k in ipairs(q.mem or {}) do out.mem[i] = redis.call('GET', k) end
for i, p in ipairs(q.prev or {}) do
  local ids = redis.call('ZREVRANGEBYSCORE', p[1], '(' .. p[2], '-inf', 'LIMIT', 0, 1)
  out.prev[i] = (ids[1] and redis.call('GET', q.mp .. ids[1])) or false
end
return cjson.encode(out)
