-- Settle or cancel a reservation, once: replace what it held with what was spent (cancel: spent
-- nothing, and the request itself is taken back). Idempotent through the reservation's marker, so
-- a settle retried after a timeout can never apply twice.
-- KEYS[i]: the limit hashes of the reservation, then its marker and its tombstone
-- ARGV: actual tokens, actual micro-dollars, cancel (1 or 0), then each key's metric
local n = #KEYS - 2
local marker, tombstone = KEYS[n + 1], KEYS[n + 2]
local held = redis.call('GET', marker)
if not held then
  if ARGV[3] == '1' then
    -- cancelled before the reservation arrived (a timed-out call still in flight): block it
    redis.call('SET', tombstone, '1', 'EX', 3600)
  end
  return 0
end
local actual = {tokens = tonumber(ARGV[1]), usd = tonumber(ARGV[2])}
local cancel = ARGV[3] == '1'
local values = {}
for value in string.gmatch(held, '[^,]+') do values[#values + 1] = value end
for i = 1, n do
  local period, amount = values[(i - 1) * 2 + 1], tonumber(values[(i - 1) * 2 + 2])
  local metric = ARGV[3 + i]
  local delta
  if metric == 'requests' then
    delta = cancel and -amount or 0
  else
    delta = (cancel and 0 or actual[metric]) - amount
  end
  if redis.call('HGET', KEYS[i], 'p') == period then
    if delta ~= 0 then
      local u = redis.call('HINCRBY', KEYS[i], 'u', delta)
      if u < 0 then redis.call('HSET', KEYS[i], 'u', 0) end
    end
    if metric ~= 'requests' then
      -- what this reservation held is held no more
      -- (Redis refuses the increment -0, so a hold of nothing, a free price, is skipped)
      if amount > 0 and redis.call('HINCRBY', KEYS[i], 'h', -amount) < 0 then redis.call('HSET', KEYS[i], 'h', 0) end
      if redis.call('HINCRBY', KEYS[i], 'f', -1) < 0 then redis.call('HSET', KEYS[i], 'f', 0) end
    end
  end
end
redis.call('DEL', marker)
return 1
