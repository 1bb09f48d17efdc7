-- Read v, j, sb, d of many memory hashes in one command: a pipeline of hundreds of HMGETs costs
-- more in client-side packing and parsing than the reads themselves. Read-only; every key is
-- declared (all share the tenant's hash slot).
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = redis.call('HMGET', key, 'v', 'j', 'sb', 'd')
end
return out
