-- The index pages a context call reads, in one command: a pipeline of them costs more in
-- client-side packing and parsing than Redis spends on them.
-- Read-only; every key is declared (all share the tenant's hash slot).
-- KEYS: the indexes. ARGV: per key, a start and a count (newest first), in KEYS order.
-- Returns per key {entries in the index, {ids}}.
local out = {}
for i, key in ipairs(KEYS) do
  local start = tonumber(ARGV[2 * i - 1])
  out[i] = {redis.call('ZCARD', key), redis.call('ZREVRANGE', key, start, start + tonumber(ARGV[2 * i]) - 1)}
end
return out
