-- Remove index members whose memory is gone, unless it came back meanwhile: the read that saw it
-- absent or deleted ran before this, and the worker may have written it again since.
-- KEYS: index keys. ARGV: 1 the tenant's memory key prefix, 2 JSON list (per key) of memory ids.
-- Value layout: sinks/hotset/layout.py (<version 32><deleted 0|1>...). Returns members removed.
local ids = cjson.decode(ARGV[2])
local removed = 0
for i, key in ipairs(KEYS) do
  for _, id in ipairs(ids[i]) do
    local head = redis.call('GETRANGE', ARGV[1] .. id, 0, 32)
    local live = #head == 33 and string.find(head, '^%d+0$')
    if not live then removed = removed + redis.call('ZREM', key, id) end
  end
end
return removed
