-- Re-warm one memory from a warehouse read, with the sink's version guard: never overwrite a
-- version the hotset already holds or a newer one (including a newer tombstone).
-- Value layout: app/hotset_format.py (<version 32><deleted 0|1><record json>\30<superseded_by>).
-- KEYS: 1 memory key. ARGV: 1 version, 2 record json, 3 superseded_by or '', 4 ttl seconds
local SEP = '\30'
local cur = redis.call('GETRANGE', KEYS[1], 0, 31)
local ours = #cur == 32 and string.find(cur, '^%d+$')  -- anything else is overwritten
if ours and cur >= ARGV[1] then
  return 0
end
-- Like the sink, never clear a superseded marker: once superseded, a memory stays superseded.
local sb = ARGV[3]
if sb == '' and ours then
  local older = redis.call('GET', KEYS[1])
  local cut = string.find(older, SEP, 34, true)
  if cut then sb = string.sub(older, cut + 1) end
end
redis.call('SET', KEYS[1], ARGV[1] .. '0' .. ARGV[2] .. SEP .. sb, 'EX', ARGV[4])
return 1
