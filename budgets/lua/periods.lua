-- Shared by the ledger scripts: the current period of a window, from Redis's own clock (the
-- period number and the unix time it ends; months are calendar months, UTC), and reading and
-- holding on the limit hashes.
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = (m + 9) % 12
  local doy = math.floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

local function civil_from_days(z)
  z = z + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local m = mp < 10 and mp + 3 or mp - 9
  if m <= 2 then y = y + 1 end
  return y, m
end

local FIXED = {minute = 60, hour = 3600, day = 86400}

local function period(window, now)
  local seconds = FIXED[window]
  if seconds then
    local number = math.floor(now / seconds)
    return number, (number + 1) * seconds
  end
  local y, m = civil_from_days(math.floor(now / 86400))
  local ny, nm = y, m + 1
  if nm > 12 then ny, nm = y + 1, 1 end
  return y * 12 + m - 1, days_from_civil(ny, nm, 1) * 86400
end

local function now_from_redis()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end

-- The limits of KEYS[1..n] as ARGV describes them from `offset` on (per key: window, metric, limit,
-- warn), with each hash's counters in the current period: used (holds included), held by
-- reservations in flight, and how many those are (zeros once the stored period has passed).
local function read_limits(offset, n, now)
  local s = {periods = {}, ends = {}, used = {}, held = {}, flying = {}, metrics = {}, limits = {}, warns = {}}
  for i = 1, n do
    local base = offset + (i - 1) * 4
    s.metrics[i] = ARGV[base + 2]
    s.limits[i] = tonumber(ARGV[base + 3])
    s.warns[i] = tonumber(ARGV[base + 4])
    s.periods[i], s.ends[i] = period(ARGV[base + 1], now)
    local stored = redis.call('HMGET', KEYS[i], 'p', 'u', 'h', 'f')
    if stored[1] and tonumber(stored[1]) == s.periods[i] then
      s.used[i] = tonumber(stored[2]) or 0
      s.held[i] = tonumber(stored[3]) or 0
      s.flying[i] = tonumber(stored[4]) or 0
    else
      s.used[i], s.held[i], s.flying[i] = 0, 0, 0
    end
  end
  return s
end

-- Hold amounts[i] on each limit read by read_limits: counted as used, and where holds[i] also as
-- held by one more holder in flight; then the marker settling reads (per key: period, amount),
-- kept until the longest period has ended. Returns the indices of the soft limits crossed and the
-- tightest token limit's room left (-1: no token limit).
local function hold(s, amounts, holds, marker, now)
  local crossed, remaining, holding, last_end = {}, -1, {}, now
  for i = 1, #s.periods do
    local amount = amounts[i]
    local new_used = s.used[i] + amount
    local new_held = holds[i] and s.held[i] + amount or s.held[i]
    local new_flying = holds[i] and s.flying[i] + 1 or s.flying[i]
    if s.used[i] == 0 and s.held[i] == 0 then
      -- a new period (or its first use): start the counters and let them expire after the period
      redis.call('HSET', KEYS[i], 'p', s.periods[i], 'u', new_used, 'h', new_held, 'f', new_flying)
      redis.call('EXPIREAT', KEYS[i], math.ceil(s.ends[i]) + 60)
    else
      redis.call('HSET', KEYS[i], 'u', new_used, 'h', new_held, 'f', new_flying)
    end
    if s.warns[i] >= 0 and s.used[i] < s.warns[i] and new_used >= s.warns[i] then
      crossed[#crossed + 1] = i
    end
    if s.metrics[i] == 'tokens' then
      local left = s.limits[i] - new_used
      if remaining < 0 or left < remaining then remaining = left end
    end
    holding[#holding + 1] = s.periods[i]
    holding[#holding + 1] = amount
    if s.ends[i] > last_end then last_end = s.ends[i] end
  end
  redis.call('SET', marker, table.concat(holding, ','), 'EX', math.ceil(last_end - now) + 60)
  return crossed, remaining
end
