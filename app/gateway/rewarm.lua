-- Re-warm one memory hash from a warehouse read, with the sink's version guard: never overwrite
-- a version the hotset already holds or a newer one (including a newer tombstone).
-- KEYS: 1 memory hash. ARGV: 1 version, 2 record json, 3 superseded_by or '', 4 ttl seconds
local cur = redis.call('HGET', KEYS[1], 'v')
if cur and cur >= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'j', ARGV[2])
redis.call('HDEL', KEYS[1], 'd')
-- Like the sink, never clear `sb`: once superseded, a memory stays superseded.
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[1], 'sb', ARGV[3])
end
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
