-- Read what the pure planner needs for one tenant's batch, in one call.
-- KEYS[1]: the tenant's stats hash (declares the slot; all keys share the {tenant} hash tag).
-- ARGV[1]: JSON {dd: [dedupe keys], act: active hash key, af: [fields], seen: [ledger keys]}.
-- Returns JSON {dd: [value or false], af: [value or false], seen: [0|1]}.
local q = cjson.decode(ARGV[1])
local out = {dd = {}, af = {}, seen = {}}
for i, k in ipairs(q.dd) do out.dd[i] = redis.call('GET', k) end
for i, f in ipairs(q.af) do out.af[i] = redis.call('HGET', q.act, f) end
for i, k in ipairs(q.seen) do out.seen[i] = redis.call('EXISTS', k) end
return cjson.encode(out)
