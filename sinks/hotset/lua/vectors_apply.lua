-- Write or drop one tenant's memory vectors (the embedding agent), version-guarded.
-- KEYS[1]: the tenant's vector meta hash (seq, del); KEYS[2]: the tenant's vector index (zset).
-- ARGV: groups of 7: kind (w write | r re-embed: also replaces the same version's vector | x drop), memory key, vector key, memory id, version,
-- value (layout: sinks/hotset/vectors.py; empty for x), TTL in seconds. Returns how many
-- vectors changed.
-- A vector is written only for the version the hotset holds (or will hold: the memory may not be
-- written yet), never over a newer vector, and never for a deleted memory; it expires with the
-- memory (its remaining TTL, else the record's TTL).
local meta, index = KEYS[1], KEYS[2]
local changed = 0
local function version_of(key)
  local v = redis.call('GETRANGE', key, 0, 31)
  return string.find(v, '^%d+$') and #v == 32 and v
end
for i = 1, #ARGV, 7 do
  local kind, mkey, vkey, id, ver, value, ttl = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4],
    ARGV[i + 5], tonumber(ARGV[i + 6])
  if kind == 'x' then
    local cur = version_of(vkey)
    if (not cur or cur <= ver) and redis.call('DEL', vkey) == 1 then changed = changed + 1 end
    if redis.call('ZREM', index, id) == 1 then redis.call('HINCRBY', meta, 'del', 1) end
  else
    local head = redis.call('GETRANGE', mkey, 0, 32)
    local mver = #head == 33 and string.sub(head, 1, 32)
    local deleted = mver and string.sub(head, 33, 33) == '1'
    local cur = version_of(vkey)
    local stale = cur and (cur > ver or (cur == ver and kind ~= 'r'))
    if not deleted and not (mver and mver > ver) and not stale then
      local pttl = redis.call('PTTL', mkey)
      if pttl > 0 then
        redis.call('SET', vkey, value, 'PX', pttl)
      else
        redis.call('SET', vkey, value, 'EX', ttl)
      end
      local seq = redis.call('HINCRBY', meta, 'seq', 1)
      redis.call('ZADD', index, seq, id)
      changed = changed + 1
    end
  end
end
return changed
