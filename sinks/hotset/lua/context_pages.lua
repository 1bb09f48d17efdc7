-- The index pages a context call reads and the memories they name, in one command: a separate
-- MGET would send every key name back to Redis, and packing them costs the client more than
-- Redis spends on the whole call.
-- Read-only. KEYS[1]: the tenant's standing generation (keys.standing_generation); KEYS[2..]:
-- the indexes (all share the tenant's hash slot, as do the memories).
-- ARGV[1]: the memory key prefix (keys.memory(tenant, "")); ARGV[2]: the generation the caller's
-- cached standing sections were read at ('' for none); ARGV[3]: how many of the indexes, from the
-- first, hold standing knowledge: they are not read when ARGV[2] is the current generation (the
-- caller's cache is current); then per index a start and a count (newest first), in KEYS order.
-- Returns {the current generation ('0' before any), per index {entries in the index, {ids},
-- {values}}}: values aligned with ids, nil where the memory is absent or was already returned for
-- an earlier id of this call; a skipped index reads {-1, {}, {}}.
local prefix = ARGV[1]
local generation = redis.call('GET', KEYS[1]) or '0'
local skip = (ARGV[2] == generation) and tonumber(ARGV[3]) or 0
local CHUNK = 1000  -- keys per MGET (unpack's stack limit)
local seen = {}
local out = {}
for i = 2, #KEYS do
  local key = KEYS[i]
  if i - 1 <= skip then
    out[i - 1] = {-1, {}, {}}
  else
    local start = tonumber(ARGV[2 * i])
    local ids = redis.call('ZREVRANGE', key, start, start + tonumber(ARGV[2 * i + 1]) - 1)
    local names, at = {}, {}
    for j, id in ipairs(ids) do
      if not seen[id] then
        seen[id] = true
        names[#names + 1] = prefix .. id
        at[#at + 1] = j
      end
    end
    local values = {}
    for j = 1, #ids do values[j] = false end
    for c = 1, #names, CHUNK do
      local got = redis.call('MGET', unpack(names, c, math.min(c + CHUNK - 1, #names)))
      for n = 1, #got do values[at[c + n - 1]] = got[n] end
    end
    out[i - 1] = {redis.call('ZCARD', key), ids, values}
  end
end
return {generation, out}
