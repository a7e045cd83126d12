-- Reserve in one atomic step: check every limit of a request's subjects, grant the largest
-- completion all of them allow, and hold it. Mirrors budgets.policy.affordable_completion.
-- KEYS[i]: a hash per limit, fields p (period number), u (used in that period), h (of which held
--         by reservations in flight) and f (how many they are); then two more:
--         the reservation's marker (what it holds, so settling and cancelling are idempotent)
--         and its tombstone (set by a cancel that arrived first: the reservation must not apply)
-- ARGV: prompt_tokens, max_completion, input_price, output_price (micro-USD per token), the
--       share of each token and money limit the request may not use (a background lane's),
--       then for each key: window, metric ("tokens" | "usd" | "requests"), limit, warn (-1: none)
-- Returns {0, blocking key index, its used amount, seconds until it frees, held, in flight} or
--         {1, granted, cost, remaining tokens (-1: no token limit), period per key..., crossed key indices...}
local prompt = tonumber(ARGV[1])
local granted = tonumber(ARGV[2])
local in_price = tonumber(ARGV[3])
local out_price = tonumber(ARGV[4])
local keep_share = tonumber(ARGV[5])
local now = now_from_redis()
local n = #KEYS - 2
local marker, tombstone = KEYS[n + 1], KEYS[n + 2]
if redis.call('EXISTS', tombstone) == 1 then
  return {0, 0, 0, '0'}
end
local s = read_limits(5, n, now)
local free = prompt == 0 and granted == 0

for i = 1, n do
  local room = s.limits[i] - s.used[i]
  if s.metrics[i] ~= 'requests' and keep_share > 0 then room = room - math.ceil(s.limits[i] * keep_share) end
  local allowed
  if s.metrics[i] == 'requests' then
    if room >= 1 then allowed = math.max(granted, 1) else allowed = -1 end
  elseif free then
    allowed = 1
  elseif s.metrics[i] == 'tokens' then
    allowed = room - prompt
  else
    local left = room - prompt * in_price
    if left < 0 then
      allowed = -1
    elseif out_price <= 0 then
      allowed = granted
    else
      allowed = math.floor(left / out_price)
    end
  end
  if allowed < 1 then
    return {0, i, s.used[i], tostring(s.ends[i] - now), s.held[i], s.flying[i]}
  end
  if s.metrics[i] ~= 'requests' and not free and allowed < granted then granted = allowed end
end

local cost = math.ceil(prompt * in_price + granted * out_price)
local per_metric = {tokens = prompt + granted, usd = cost, requests = 1}
local amounts, holds = {}, {}
for i = 1, n do
  amounts[i] = per_metric[s.metrics[i]]
  -- a request counts once it is made; tokens and money are held until the request settles
  -- (a requests limit's holds are request slots that leases hold: see lease.lua)
  holds[i] = s.metrics[i] ~= 'requests'
end
local crossed, remaining = hold(s, amounts, holds, marker, now)
local result = {1, granted, cost, remaining}
for i = 1, n do result[4 + i] = s.periods[i] end
for _, index in ipairs(crossed) do result[#result + 1] = index end
return result
