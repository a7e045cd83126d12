-- Settle: replace what a reservation held with what was spent, in the periods it was held in.
-- KEYS[i]: the limit hashes of the reservation; ARGV: per key: period number, delta (may be negative)
for i = 1, #KEYS do
  local p = ARGV[(i - 1) * 2 + 1]
  local delta = tonumber(ARGV[(i - 1) * 2 + 2])
  local stored = redis.call('HGET', KEYS[i], 'p')
  if stored == p and delta ~= 0 then
    local u = redis.call('HINCRBY', KEYS[i], 'u', delta)
    if u < 0 then redis.call('HSET', KEYS[i], 'u', 0) end
  end
end
return 1
