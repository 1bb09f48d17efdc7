-- The id lists a context call reads, one bounded ZREVRANGE per index, in one command: a
-- pipeline of them costs more in client-side packing and parsing than Redis spends on them.
-- Read-only; every key is declared (all share the tenant's hash slot).
-- KEYS: the indexes. ARGV: how many ids (newest first) to read from each, in KEYS order.
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = redis.call('ZREVRANGE', key, 0, tonumber(ARGV[i]) - 1)
end
return out
