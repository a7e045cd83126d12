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
local periods, ends, used, held, flying, windows, metrics, limits, warns = {}, {}, {}, {}, {}, {}, {}, {}, {}
local free = prompt == 0 and granted == 0

for i = 1, n do
  local base = 5 + (i - 1) * 4
  windows[i] = ARGV[base + 1]
  metrics[i] = ARGV[base + 2]
  limits[i] = tonumber(ARGV[base + 3])
  warns[i] = tonumber(ARGV[base + 4])
  periods[i], ends[i] = period(windows[i], now)
  local stored = redis.call('HMGET', KEYS[i], 'p', 'u', 'h', 'f')
  if stored[1] and tonumber(stored[1]) == periods[i] then
    used[i] = tonumber(stored[2]) or 0
    held[i] = tonumber(stored[3]) or 0
    flying[i] = tonumber(stored[4]) or 0
  else
    used[i], held[i], flying[i] = 0, 0, 0
  end
end

for i = 1, n do
  local room = limits[i] - used[i]
  if metrics[i] ~= 'requests' and keep_share > 0 then room = room - math.ceil(limits[i] * keep_share) end
  local allowed
  if metrics[i] == 'requests' then
    if room >= 1 then allowed = math.max(granted, 1) else allowed = -1 end
  elseif free then
    allowed = 1
  elseif metrics[i] == 'tokens' then
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
    return {0, i, used[i], tostring(ends[i] - now), held[i], flying[i]}
  end
  if metrics[i] ~= 'requests' and not free and allowed < granted then granted = allowed end
end

local cost = math.ceil(prompt * in_price + granted * out_price)
local amounts = {tokens = prompt + granted, usd = cost, requests = 1}
local remaining = -1
local result = {1, granted, cost, remaining}
local crossed = {}
for i = 1, n do
  local new_used = used[i] + amounts[metrics[i]]
  -- a request counts once it is made; tokens and money are held until the request settles
  -- (a requests limit's holds are request slots that leases hold: see lease.lua)
  local holds = metrics[i] ~= 'requests'
  local new_held = holds and held[i] + amounts[metrics[i]] or held[i]
  local new_flying = holds and flying[i] + 1 or flying[i]
  if used[i] == 0 and held[i] == 0 then
    -- a new period (or its first use): start the counters and let them expire after the period
    redis.call('HSET', KEYS[i], 'p', periods[i], 'u', new_used, 'h', new_held, 'f', new_flying)
    redis.call('EXPIREAT', KEYS[i], math.ceil(ends[i]) + 60)
  else
    redis.call('HSET', KEYS[i], 'u', new_used, 'h', new_held, 'f', new_flying)
  end
  result[4 + i] = periods[i]
  if warns[i] >= 0 and used[i] < warns[i] and new_used >= warns[i] then
    crossed[#crossed + 1] = i
  end
  if metrics[i] == 'tokens' then
    local left = limits[i] - new_used
    if remaining < 0 or left < remaining then remaining = left end
  end
end
result[4] = remaining
for _, index in ipairs(crossed) do result[#result + 1] = index end
-- the marker: per key, the period and the amount held; kept until the longest period has ended
local holding, last_end = {}, now
for i = 1, n do
  holding[#holding + 1] = periods[i]
  holding[#holding + 1] = amounts[metrics[i]]
  if ends[i] > last_end then last_end = ends[i] end
end
redis.call('SET', marker, table.concat(holding, ','), 'EX', math.ceil(last_end - now) + 60)
return result
