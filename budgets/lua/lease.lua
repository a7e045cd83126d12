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
local s = read_limits(8, n, now)
local grant = {tokens = -1, usd = -1, requests = -1}
local first_end = nil
for i = 1, n do
  if first_end == nil or s.ends[i] < first_end then first_end = s.ends[i] end
  local room = s.limits[i] - s.used[i]
  if s.metrics[i] ~= 'requests' then room = room - math.ceil(s.limits[i] * keep_share) end
  local slice = math.floor(math.max(0, room) * share)
  local metric = s.metrics[i]
  if grant[metric] < 0 then grant[metric] = asked[metric] end
  if slice < grant[metric] then grant[metric] = slice end
end
local to_end = tostring(first_end - now)
for metric, amount in pairs(grant) do
  if amount >= 0 and amount < least[metric] then
    return {0, to_end}
  end
end

local amounts, holds = {}, {}
for i = 1, n do
  amounts[i] = grant[s.metrics[i]]
  holds[i] = true  -- a lease holds all of its slice, request slots too, until it is settled
end
local crossed, remaining = hold(s, amounts, holds, marker, now)
local result = {1, grant.tokens, grant.usd, grant.requests, to_end, remaining}
for _, index in ipairs(crossed) do result[#result + 1] = index end
return result
