-- Take a lease: hold a slice of every limit of a request's subjects for one gateway process, which
-- then grants requests from it without a round trip and settles the slice as a whole. A lease is a
-- reservation like any other (held until settled, released when its periods end), only larger.
-- KEYS[i]: the limit hashes (as in reserve.lua), then the lease's marker and tombstone
-- ARGV: asked tokens, micro-dollars and requests; the least worth taking of each; the share of
--       each limit's room a lease may take; the share kept for critical work (tokens and money);
--       then for each key: window, metric, limit, warn (-1: none)
-- Returns {0, seconds until the earliest period ends} when a lease worth taking does not fit, or
--         {1, tokens, micro-dollars, requests (-1: that metric has no limit), seconds until the
--          earliest period ends, remaining tokens (-1: no token limit), crossed key indices...}
local asked = {tokens = tonumber(ARGV[1]), usd = tonumber(ARGV[2]), requests = tonumber(ARGV[3])}
local least = {tokens = tonumber(ARGV[4]), usd = tonumber(ARGV[5]), requests = tonumber(ARGV[6])}
local share = tonumber(ARGV[7])
local keep_share = tonumber(ARGV[8])
local now = now_from_redis()
local n = #KEYS - 2
local marker, tombstone = KEYS[n + 1], KEYS[n + 2]
if redis.call('EXISTS', tombstone) == 1 then
  return {0, '0'}
end
local periods, ends, used, held, flying, metrics, limits, warns = {}, {}, {}, {}, {}, {}, {}, {}
local grant = {tokens = -1, usd = -1, requests = -1}
local first_end = nil
for i = 1, n do
  local base = 8 + (i - 1) * 4
  local window = ARGV[base + 1]
  metrics[i] = ARGV[base + 2]
  limits[i] = tonumber(ARGV[base + 3])
  warns[i] = tonumber(ARGV[base + 4])
  periods[i], ends[i] = period(window, now)
  if first_end == nil or ends[i] < first_end then first_end = ends[i] end
  local stored = redis.call('HMGET', KEYS[i], 'p', 'u', 'h', 'f')
  if stored[1] and tonumber(stored[1]) == periods[i] then
    used[i] = tonumber(stored[2]) or 0
    held[i] = tonumber(stored[3]) or 0
    flying[i] = tonumber(stored[4]) or 0
  else
    used[i], held[i], flying[i] = 0, 0, 0
  end
  local room = limits[i] - used[i]
  if metrics[i] ~= 'requests' then room = room - math.ceil(limits[i] * keep_share) end
  local slice = math.floor(math.max(0, room) * share)
  local metric = metrics[i]
  if grant[metric] < 0 then grant[metric] = asked[metric] end
  if slice < grant[metric] then grant[metric] = slice end
end
local to_end = tostring(first_end - now)
for metric, amount in pairs(grant) do
  if amount >= 0 and amount < least[metric] then
    return {0, to_end}
  end
end

local remaining = -1
local crossed = {}
local holding, last_end = {}, now
for i = 1, n do
  local amount = grant[metrics[i]]
  local new_used = used[i] + amount
  if used[i] == 0 and held[i] == 0 then
    redis.call('HSET', KEYS[i], 'p', periods[i], 'u', new_used, 'h', amount, 'f', flying[i] + 1)
    redis.call('EXPIREAT', KEYS[i], math.ceil(ends[i]) + 60)
  else
    redis.call('HSET', KEYS[i], 'u', new_used, 'h', held[i] + amount, 'f', flying[i] + 1)
  end
  if warns[i] >= 0 and used[i] < warns[i] and new_used >= warns[i] then
    crossed[#crossed + 1] = i
  end
  if metrics[i] == 'tokens' then
    local left = limits[i] - new_used
    if remaining < 0 or left < remaining then remaining = left end
  end
  holding[#holding + 1] = periods[i]
  holding[#holding + 1] = amount
  if ends[i] > last_end then last_end = ends[i] end
end
redis.call('SET', marker, table.concat(holding, ','), 'EX', math.ceil(last_end - now) + 60)
local result = {1, grant.tokens, grant.usd, grant.requests, to_end, remaining}
for _, index in ipairs(crossed) do result[#result + 1] = index end
return result
