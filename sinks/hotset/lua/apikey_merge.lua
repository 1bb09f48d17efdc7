-- Cache one API key record from the system of record (AI_MEMORY.API_KEYS) in Redis.
-- KEYS[1] the key's hash (ms:apikey:<key id>): the only key, because API key hashes are not in
-- their tenant's cluster slot (a key id is looked up before its tenant is known); the caller
-- adds the id to the tenant's set of key ids.
-- ARGV[1] '1' when the record is revoked, ARGV[2] the key id, ARGV[3] revoked_at,
-- ARGV[4..] the record's field/value pairs.
-- A record is written only when none is cached; a revocation is copied onto a cached record, so a
-- refill from an older read never undoes a revocation made meanwhile. Returns 1 when it wrote.
local exists = redis.call('HEXISTS', KEYS[1], 'hash')
if exists == 0 then
  redis.call('HSET', KEYS[1], unpack(ARGV, 4))
  return 1
end
if ARGV[1] == '1' then
  redis.call('HSET', KEYS[1], 'revoked', '1', 'revoked_at', ARGV[3])
  return 1
end
return 0
