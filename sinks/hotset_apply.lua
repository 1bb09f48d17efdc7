-- Apply one write intent to the hotset atomically. Versions are fixed-width digit strings,
-- so string comparison orders them; a replay or an older version never overwrites a newer one.
-- KEYS: 1 memory hash, 2 event ledger, 3 stats, 4 active hash, 5 dedupe key,
--       6 memory hash this write supersedes (or KEYS[1]), 7.. sorted-set indexes (ZADD score id)
-- ARGV: 1 kind (w|x|d|p), 2 version, 3 record json, 4 ttl, 5 state ttl, 6 score, 7 active field,
--       8 active value, 9 dedupe value, 10 dedupe ttl, 11 memory id, 12 superseded_by, 13 type,
--       14 number of counter pairs, 15.. counter name, increment
local kind = ARGV[1]
-- The event id is the idempotency key: an event already applied changes nothing.
if not redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[5]) then
  return 0
end
local function count(extra)
  local n = tonumber(ARGV[14])
  for i = 15, 14 + 2 * n, 2 do
    redis.call('HINCRBY', KEYS[3], ARGV[i], ARGV[i + 1])
  end
  if extra then redis.call('HINCRBY', KEYS[3], extra, 1) end
end
if kind == 'd' or kind == 'p' then
  count(nil)
  return 0
end
local cur = redis.call('HGET', KEYS[1], 'v')
if cur and cur >= ARGV[2] then
  return 0
end
if kind == 'x' then
  redis.call('HSET', KEYS[1], 'v', ARGV[2], 'j', ARGV[3], 'd', '1')
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  count(nil)
  return 1
end
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'j', ARGV[3])
redis.call('HDEL', KEYS[1], 'd')
if ARGV[12] ~= '' then
  redis.call('HSET', KEYS[1], 'sb', ARGV[12])
end
redis.call('EXPIRE', KEYS[1], ARGV[4])
for i = 7, #KEYS do
  redis.call('ZADD', KEYS[i], ARGV[6], ARGV[11])
end
if ARGV[7] ~= '' then
  local a = redis.call('HGET', KEYS[4], ARGV[7])
  if (not a) or a < ARGV[8] then
    redis.call('HSET', KEYS[4], ARGV[7], ARGV[8])
    if KEYS[6] ~= KEYS[1] and redis.call('EXISTS', KEYS[6]) == 1 then
      redis.call('HSET', KEYS[6], 'sb', ARGV[11])
    end
  end
end
if ARGV[9] ~= '' then
  redis.call('SET', KEYS[5], ARGV[9], 'EX', ARGV[10])
end
if cur then count(nil) else count('type:' .. ARGV[13]) end
return 1
