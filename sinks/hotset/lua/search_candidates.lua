-- Stage 1 of search (see app/gateway/search.py), inside Redis: reading thousands of postings
-- into Python costs far more than scoring them here. Read-only; all keys share the tenant slot.
-- KEYS: 1 recency index of all memories, 2..1+T term postings, then F filter indexes
-- ARGV: 1 T, 2 pool, 3 now (ms), 4 recency half-life (ms), 5 how many ids to return
-- Returns: {n_docs, examined, df_1..df_T, id, score, id, score, ...} best first.
local T = tonumber(ARGV[1])
local pool = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local half = tonumber(ARGV[4])
local top = tonumber(ARGV[5])
local n_docs = redis.call('ZCARD', KEYS[1])
local df, idf, total = {}, {}, 0
for t = 1, T do
  df[t] = redis.call('ZCARD', KEYS[1 + t])
  total = total + df[t]
  local n = math.max(n_docs, df[t], 1)
  idf[t] = math.max(0.01, math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5)))
end
local filters = {}
local driver, driver_card = nil, nil
for k = 2 + T, #KEYS do
  local c = redis.call('ZCARD', KEYS[k])
  if c == 0 then
    local out = {n_docs, 0}
    for t = 1, T do out[#out + 1] = df[t] end
    return out
  end
  filters[#filters + 1] = KEYS[k]
  if driver_card == nil or c < driver_card then driver, driver_card = KEYS[k], c end
end
-- Candidates and their posting time (ms), from the smallest set: a narrow filter beats postings.
-- `from[m]`: the term whose postings produced m (it holds that term: no lookup needed for it),
-- or -1 when m came from the intersection of every term's postings (it holds them all).
local when, order, from = {}, {}, {}
local function add(rows, t)
  for i = 1, #rows, 2 do
    if #order >= pool then return end
    local m = rows[i]
    if when[m] == nil then
      when[m] = tonumber(rows[i + 1])
      order[#order + 1] = m
      from[m] = t
    end
  end
end
local by_filter = driver ~= nil and driver_card <= total
if by_filter then
  add(redis.call('ZREVRANGE', driver, 0, pool - 1, 'WITHSCORES'), 0)
else
  local live = 0
  for t = 1, T do if df[t] > 0 then live = live + 1 end end
  if live == 0 then
    local out = {n_docs, 0}
    for t = 1, T do out[#out + 1] = df[t] end
    return out
  end
  -- Memories holding every term first (relevance is highest there), when there are few enough
  -- to take all: postings alone reach only the newest, and miss older memories with all terms.
  local live_keys, by_df = {}, {}
  for t = 1, T do
    if df[t] > 0 then
      live_keys[#live_keys + 1] = KEYS[1 + t]
      by_df[#by_df + 1] = t
    end
  end
  if live >= 2 then
    local card = {'ZINTERCARD', live, unpack(live_keys)}
    card[#card + 1] = 'LIMIT'
    card[#card + 1] = pool + 1
    local all = redis.call(unpack(card))
    if all > 0 and all <= pool then
      local inter = {'ZINTER', live, unpack(live_keys)}
      for _, a in ipairs({'AGGREGATE', 'MAX', 'WITHSCORES'}) do inter[#inter + 1] = a end
      add(redis.call(unpack(inter)), -1)
    end
  end
  -- Then each term's newest postings, the rarest first, sharing what is left of the pool: a term
  -- with fewer postings than its share leaves the rest to the others.
  table.sort(by_df, function(a, b) return df[a] < df[b] end)
  for i, t in ipairs(by_df) do
    local share = math.floor((pool - #order) / (#by_df - i + 1))
    if share > 0 then add(redis.call('ZREVRANGE', KEYS[1 + t], 0, share - 1, 'WITHSCORES'), t) end
  end
end
-- Membership by ZMSCORE, one call per index over every candidate still in play: a redis.call
-- costs far more than a lookup, so per-candidate ZSCOREs were most of the search's time.
local function mscore(key, members)
  local out = {}
  for s = 1, #members, 512 do
    local r = redis.call('ZMSCORE', key, unpack(members, s, math.min(#members, s + 511)))
    for i = 1, #r do out[s + i - 1] = r[i] end
  end
  return out
end
local cands = order
for _, f in ipairs(filters) do
  if not (by_filter and f == driver) and #cands > 0 then
    local s, kept = mscore(f, cands), {}
    for i = 1, #cands do if s[i] then kept[#kept + 1] = cands[i] end end
    cands = kept
  end
end
local rel = {}
for i = 1, #cands do rel[i] = 0 end
for t = 1, T do
  if df[t] > 0 then
    local ask, at = {}, {}
    for i = 1, #cands do
      local f = from[cands[i]]
      if f == t or f == -1 then
        rel[i] = rel[i] + idf[t]
      else
        ask[#ask + 1] = cands[i]
        at[#at + 1] = i
      end
    end
    if #ask > 0 then
      local s = mscore(KEYS[1 + t], ask)
      for k = 1, #ask do if s[k] then rel[at[k]] = rel[at[k]] + idf[t] end end
    end
  end
end
-- Scores in an array beside the ids (no table per candidate); only the best `top` are returned:
-- the cut comes from a plain numeric sort (no Lua comparator call per comparison), then only the
-- few above it are ordered.
local ids, sc = {}, {}
for i = 1, #cands do
  if rel[i] > 0 then
    local age = math.max(0, now - when[cands[i]])
    ids[#ids + 1] = cands[i]
    sc[#sc + 1] = rel[i] * (1 + 0.25 * (0.5 ^ (age / half)))
  end
end
local cut = -math.huge
if #sc > top then
  local neg = {}
  for i = 1, #sc do neg[i] = -sc[i] end
  table.sort(neg)
  cut = -neg[top]
end
local best = {}
for i = 1, #sc do
  if sc[i] >= cut then best[#best + 1] = i end
end
table.sort(best, function(a, b) return sc[a] > sc[b] end)
local out = {n_docs, #order}
for t = 1, T do out[#out + 1] = df[t] end
for k = 1, math.min(top, #best) do
  out[#out + 1] = ids[best[k]]
  out[#out + 1] = tostring(sc[best[k]])
end
return out
