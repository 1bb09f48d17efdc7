-- Re-warm one memory from a warehouse read, with the sink's version guard: never overwrite a
-- version the hotset already holds or a newer one (including a newer tombstone).
-- Value layout: sinks/hotset/layout.py (<version 32><deleted 0|1><record json>\30<superseded_by>).
-- KEYS: 1 memory key, 2 the tenant's active hash. ARGV: 1 version, 2 record json,
-- 3 superseded_by or '', 4 ttl seconds, 5 active field ('<type>\31<key>') or '', 6 memory id.
-- Returns the superseded_by stored ('' for none), or false when nothing was written.
local SEP = '\30'
local cur = redis.call('GETRANGE', KEYS[1], 0, 31)
local ours = #cur == 32 and string.find(cur, '^%d+$')  -- anything else is overwritten
if ours and cur >= ARGV[1] then
  return false
end
-- Like the sink, never clear a superseded marker: once superseded, a memory stays superseded.
local sb = ARGV[3]
if sb == '' and ours then
  local older = redis.call('GET', KEYS[1])
  local cut = string.find(older, SEP, 34, true)
  if cut then sb = string.sub(older, cut + 1) end
end
-- The warehouse learns of a supersession a flush later than the hotset: a newer memory already
-- active for the same key supersedes this one (the sink could not mark it: it was not hot).
if sb == '' and ARGV[5] ~= '' then
  local active = redis.call('HGET', KEYS[2], ARGV[5])
  local bar = active and string.find(active, '|', 1, true)
  if bar and string.sub(active, 1, bar - 1) > ARGV[1] and string.sub(active, bar + 1) ~= ARGV[6] then
    sb = string.sub(active, bar + 1)
  end
end
-- The active pointer names this very memory (made active again by a delete of the newer one):
-- the warehouse's marker is older than the pointer.
if sb ~= '' and ARGV[5] ~= '' then
  local active = redis.call('HGET', KEYS[2], ARGV[5])
  local bar = active and string.find(active, '|', 1, true)
  if bar and string.sub(active, bar + 1) == ARGV[6] then sb = '' end
end
redis.call('SET', KEYS[1], ARGV[1] .. '0' .. ARGV[2] .. SEP .. sb, 'EX', ARGV[4])
return sb
