-- Token buckets taken together, all or nothing, on the Redis server's clock.
-- KEYS[i]: bucket hash {tk = tokens, ts = last refill in ms}
-- ARGV[1]: cost; then per bucket i: ARGV[2i] capacity, ARGV[2i+1] refill rate (tokens per ms)
-- Returns {allowed (1|0), wait_ms until allowed, remaining tokens of the tightest bucket,
--          index of the bucket that refused (0 if allowed)}.
-- Lua numbers are doubles: epoch milliseconds (< 2^53) and fractional tokens are exact enough;
-- integers are returned because Redis truncates Lua numbers in replies anyway.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cost = tonumber(ARGV[1])
local tokens = {}
local wait, refused = 0, 0
local remaining = nil

for i = 1, #KEYS do
  local cap = tonumber(ARGV[2 * i])
  local rate = tonumber(ARGV[2 * i + 1])
  local h = redis.call('HMGET', KEYS[i], 'tk', 'ts')
  local tk, ts = tonumber(h[1]), tonumber(h[2])
  if tk == nil or ts == nil then
    tk, ts = cap, now
  end
  if now > ts then
    tk = math.min(cap, tk + (now - ts) * rate)
  end
  tokens[i] = tk
  if tk < cost then
    local w = math.ceil((cost - tk) / rate)
    if w > wait then
      wait, refused = w, i
    end
  end
end

if refused > 0 then
  return {0, wait, 0, refused}
end

for i = 1, #KEYS do
  local cap = tonumber(ARGV[2 * i])
  local rate = tonumber(ARGV[2 * i + 1])
  local left = tokens[i] - cost
  redis.call('HSET', KEYS[i], 'tk', string.format('%.6f', left), 'ts', now)
  -- The bucket is full again after this long; an absent key means a full bucket.
  redis.call('PEXPIRE', KEYS[i], math.ceil((cap - left) / rate) + 1000)
  if remaining == nil or left < remaining then
    remaining = left
  end
end
return {1, 0, math.floor(remaining), 0}
