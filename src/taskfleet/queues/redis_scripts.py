"""The Lua scripts of the Redis backend, one per state change.

Every state change of a task is one script, so it is atomic on the server: a crash of the
client between two commands can never leave a task half moved (popped but not leased, known but
not queued). Scripts take the time from the server (`TIME`), so leases and retry delays mean
the same on every host whatever their clocks say. All keys of one queue share the hash tag
`{NAME}`, so the scripts also run on Redis Cluster.

Keys (KEYS[i] in every script, in this order; see `RedisQueue._keys`):

 1 meta     hash    max_attempts, created, inserted, duplicates, completed, stale, seq,
                    flows (waiting tasks ever loaded), held (tasks waiting without a count)
 2 known    set     every id ever inserted (idempotent send; cleared only by purge)
 3 body     hash    id -> task JSON, while the task is not done
 4 att      hash    id -> deliveries so far (the attempt of the current or last lease)
 5 tok      hash    id -> token of the current lease (from meta.seq: never reused)
 6 ready    list    ids visible now, in order (fresh tasks, released ones at the head)
 7 leased   zset    id -> lease deadline (ms)
 8 delayed  zset    id -> time it becomes visible (ms)
 9 dead     zset    id -> time it was dead-lettered (ms)
10 err      hash    id -> last error
11 wait     hash    id -> how many of its dependencies are not done yet, for a waiting task
                    that waits for two or more; one that waits for one id has no count (it
                    is held by its place in that id's `next` list, and counted in meta.held)
12 next     hash    id -> the ids that wait for it, joined by newlines (ids hold no control
                    characters), until it and all of them are done (`dependents` lists them)
13 res      hash    id -> its result (JSON), from its ack until every task waiting for it is done
14 readers  hash    id -> how many tasks still have to read that result

A task that waits (`Task.after`) has a body and is in `known` like any other, but sits in no
list until the ack of its last dependency, which pushes it onto `ready` in the same script: so
it becomes visible exactly once however many consumers ack at the same time, and a duplicate
ack (a lease that had passed on) finds the dependency's body gone and releases nothing. Only
`SEND_FLOW` writes the dependency keys, and it sets meta.flows: `ACK` and `RECEIVE` read that
one field (with fields they read anyway, or one HGET per call) and do no dependency work in a
queue that never held a waiting task, so flat tasks cost nothing extra.

An id acked while it sits in `ready` (its lease had passed on and the task was given back) is
left in the list and counted in meta.stale; `receive` drops such ids when it pops them, as
their body is gone. That keeps `ack` O(1) instead of an O(N) LREM.
"""

from __future__ import annotations

# Shared prologue: the server's clock in milliseconds and the queue's max_attempts.
_PROLOGUE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local max_attempts = tonumber(redis.call('HGET', KEYS[1], 'max_attempts') or '3')
"""

# Is (id, token) the current lease? A lease that expired but was not yet taken over still is.
_HOLDS = """
local function holds(id, token)
  return redis.call('HGET', KEYS[5], id) == token and redis.call('ZSCORE', KEYS[7], id)
end
"""

# Calls `command key args...` in slices, as Lua's unpack() has a limit of a few thousand values.
_CHUNKED = """
local function chunked(command, key, args)
  for i = 1, #args, 1000 do
    redis.call(command, key, unpack(args, i, math.min(i + 999, #args)))
  end
end
"""

# HMGET of any number of fields, in slices (see _CHUNKED); a missing field is false.
_HMGET = """
local function hmget(key, fields)
  local out = {}
  for i = 1, #fields, 1000 do
    local part = redis.call('HMGET', key, unpack(fields, i, math.min(i + 999, #fields)))
    for j = 1, #part do out[#out + 1] = part[j] end
  end
  return out
end
"""

# Appends already newline-joined lists of waiters to dependencies' lists: each dependency
# comes once a call (the client groups the edges so), so they are kept in two arrays, and
# read (HMGET) and written (HSET) 500 at a time.
_APPEND_LATER = """
local fields, adds = {}, {}
local function append_later(field, joined)
  fields[#fields + 1] = field
  adds[#adds + 1] = joined
end
local function flush_appends(key)
  for i = 1, #fields, 500 do
    local last = math.min(i + 499, #fields)
    local olds = redis.call('HMGET', key, unpack(fields, i, last))
    local out = {}
    for j = i, last do
      local old = olds[j - i + 1]
      out[#out + 1] = fields[j]
      out[#out + 1] = old and (old .. '\\n' .. adds[j]) or adds[j]
    end
    redis.call('HSET', key, unpack(out))
  end
end
"""

# ARGV: id1, body1, id2, body2, ...  ->  {inserted, already_present}
SEND = """
local inserted, present = 0, 0
local new = {}
for i = 1, #ARGV, 2 do
  local id = ARGV[i]
  if redis.call('SADD', KEYS[2], id) == 1 then
    redis.call('HSET', KEYS[3], id, ARGV[i + 1])
    inserted = inserted + 1
    new[inserted] = id
  else
    present = present + 1
  end
end
if inserted > 0 then
  redis.call('RPUSH', KEYS[6], unpack(new))
  redis.call('HINCRBY', KEYS[1], 'inserted', inserted)
end
if present > 0 then
  redis.call('HINCRBY', KEYS[1], 'duplicates', present)
end
return {inserted, present}
"""

# SEND for a chunk that holds tasks that wait, with the chunk's edges grouped by the client
# (which holds the whole load) so that the script does not walk every task's `after`.
# ARGV: n, id1, body1, ..., idn, bodyn, counts, then pairs (waiters, deps): `counts` says how
# many ids each task waits for where that is not one, as space-separated pairs of its place
# in the call (from 1) and its count (0: it waits for nothing), so that a fan-out's parts
# cost nothing there; each
# pair says that every id of `deps` is waited for by the ids of `waiters` (both joined by
# newlines, which no id holds; a dependency's waiters in task order, and each dependency in
# one pair per call). Only the first entry of an id repeated in the call has edges.
#   ->  {inserted, already_present}
# A dependency counts as done when it was inserted and its body is gone (acked); one not
# inserted yet (later in the load) or not done (queued, leased, dead-lettered) is pending.
# The common case (no dependency done yet, no id already present) costs no work per edge:
# each waiter list is appended to its dependencies' lists as it came.
SEND_FLOW = (
    _CHUNKED
    + _APPEND_LATER
    + """
local n = tonumber(ARGV[1])
local ids = {}
for k = 1, n do ids[k] = ARGV[2 * k] end
local seen = redis.call('SMISMEMBER', KEYS[2], unpack(ids))
local counts = {}
local zero = false  -- a task that waits for nothing (our client sends none here)
for k, count in string.gmatch(ARGV[2 * n + 2], '(%d+) (%d+)') do
  counts[tonumber(k)] = tonumber(count)
  if count == '0' then zero = true end
end
-- fresh: id -> its place in the call, for the ids this call inserts; when that is all of
-- them (a first load), `new` is `ids` and the bodies go from ARGV as they came.
local fresh, new = {}, {}
local present, flows = 0, 0
for k, id in ipairs(ids) do
  if seen[k] == 1 or fresh[id] then
    present = present + 1
  else
    fresh[id] = k
    if (counts[k] or 1) > 0 then flows = flows + 1 end
  end
end
if present == 0 then
  new = ids
else
  for k, id in ipairs(ids) do
    if fresh[id] == k then new[#new + 1] = id end
  end
end
local met = {}  -- place in the call -> how many of its dependencies are done already
-- Done: inserted, and its body gone. Asked once per dependency (each comes once a call); the
-- tasks of this call are written at its end, so one of them named here is not done, as it
-- should be.
local function done(dep)
  if fresh[dep] then return false end
  return redis.call('HEXISTS', KEYS[3], dep) == 0 and redis.call('SISMEMBER', KEYS[2], dep) == 1
end
for g = 2 * n + 3, #ARGV, 2 do
  local waiters = ARGV[g]
  if present > 0 then  -- only the tasks this call inserts wait: the others were counted before
    local kept = {}
    for waiter in string.gmatch(waiters, '[^\\n]+') do
      if fresh[waiter] then kept[#kept + 1] = waiter end
    end
    waiters = table.concat(kept, '\\n')
  end
  if waiters ~= '' then
    for dep in string.gmatch(ARGV[g + 1], '[^\\n]+') do
      if done(dep) then
        for waiter in string.gmatch(waiters, '[^\\n]+') do
          local k = fresh[waiter]
          met[k] = (met[k] or 0) + 1
        end
      else
        append_later(dep, waiters)
      end
    end
  end
end
-- A task that waits for one id has no count (see ACK): it is counted in meta.held instead.
local waits, visible, held = {}, {}, 0
if present == 0 and next(met) == nil and not zero then
  -- A first load, no dependency done: every task waits, and only those in `counts` count.
  held = n
  for k, count in pairs(counts) do
    held = held - 1
    waits[#waits + 1] = ids[k]
    waits[#waits + 1] = count
  end
else
  for _, id in ipairs(new) do
    local k = fresh[id]
    local count = counts[k] or 1
    local left = count - (met[k] or 0)
    if left <= 0 then
      visible[#visible + 1] = id
    elseif count == 1 then
      held = held + 1
    else
      waits[#waits + 1] = id
      waits[#waits + 1] = left
    end
  end
end
if #new > 0 then
  chunked('SADD', KEYS[2], new)
  if present == 0 then
    for i = 2, 2 * n + 1, 1000 do
      redis.call('HSET', KEYS[3], unpack(ARGV, i, math.min(i + 999, 2 * n + 1)))
    end
  else
    local bodies = {}
    for _, id in ipairs(new) do
      bodies[#bodies + 1] = id
      bodies[#bodies + 1] = ARGV[2 * fresh[id] + 1]
    end
    chunked('HSET', KEYS[3], bodies)
  end
  redis.call('HINCRBY', KEYS[1], 'inserted', #new)
end
if #waits > 0 then chunked('HSET', KEYS[11], waits) end
flush_appends(KEYS[12])
if #visible > 0 then chunked('RPUSH', KEYS[6], visible) end
if present > 0 then redis.call('HINCRBY', KEYS[1], 'duplicates', present) end
if flows > 0 then redis.call('HINCRBY', KEYS[1], 'flows', flows) end
if held > 0 then redis.call('HINCRBY', KEYS[1], 'held', held) end
return {#new, present}
"""
)


# SEND, and ids already known take the given body where theirs differs (`send_updates`).
# ARGV: rerun_dead (0/1), insert_new (0/1), id1, body1, id2, body2, ...
# -> {inserted, already_present, updated, dead_updated, rerun, completed_unknown, new ids...}
# A task's body is in KEYS[3] until it is done, so a known id without a body is completed,
# and its data cannot be compared: it is left alone and counted. A leased task's body changes
# under its lease: the running attempt keeps what it received, a later one reads the new body.
# With insert_new 0, ids not known are not inserted but returned after the counts: a load with
# tasks that wait sends them through SEND_FLOW, which holds them until their dependencies.
SEND_UPDATE = """
local inserted, present, updated, dead_updated, rerun, unknown = 0, 0, 0, 0, 0, 0
local new, again = {}, {}
local left = {}
for i = 3, #ARGV, 2 do
  local id, body = ARGV[i], ARGV[i + 1]
  if ARGV[2] == '0' and redis.call('SISMEMBER', KEYS[2], id) == 0 then
    left[#left + 1] = id
  elseif redis.call('SADD', KEYS[2], id) == 1 then
    redis.call('HSET', KEYS[3], id, body)
    inserted = inserted + 1
    new[inserted] = id
  else
    present = present + 1
    local old = redis.call('HGET', KEYS[3], id)
    if not old then
      unknown = unknown + 1
    elseif old ~= body then
      redis.call('HSET', KEYS[3], id, body)
      if not redis.call('ZSCORE', KEYS[9], id) then
        updated = updated + 1
      elseif ARGV[1] == '1' then
        redis.call('ZREM', KEYS[9], id)
        redis.call('HDEL', KEYS[4], id)
        redis.call('HDEL', KEYS[10], id)
        rerun = rerun + 1
        again[rerun] = id
      else
        dead_updated = dead_updated + 1
      end
    end
  end
end
if inserted > 0 then
  redis.call('RPUSH', KEYS[6], unpack(new))
  redis.call('HINCRBY', KEYS[1], 'inserted', inserted)
end
if rerun > 0 then redis.call('RPUSH', KEYS[6], unpack(again)) end
if present > 0 then
  redis.call('HINCRBY', KEYS[1], 'duplicates', present)
end
local answer = {inserted, present, updated, dead_updated, rerun, unknown}
for _, id in ipairs(left) do answer[#answer + 1] = id end
return answer
"""

# ARGV: max_messages (at most 1000), lease_ms
# -> {wait_hint_ms, {attempts, error, body, ...}, flows, 'token:attempt:body', ...};
#    wait_hint_ms is how long until a delayed task or a lease falls due (-1: none), so an empty
#    receive knows how long to block. The second element lists the tasks this call
#    dead-lettered (their lease expired on their last attempt), three values each, so that the
#    caller reports them. `flows` is meta.flows (0: the queue never held a waiting task, so
#    acks need not carry results). One string per leased message keeps the reply small.
RECEIVE = (
    _PROLOGUE
    + _CHUNKED
    + """
local n = tonumber(ARGV[1])
local until_ms = now + tonumber(ARGV[2])
local dead_out = {}
local m = redis.call('HMGET', KEYS[1], 'seq', 'flows')
local out = {-1, dead_out, tonumber(m[2] or '0')}
local seq = tonumber(m[1] or '0')
local leases, tokens, attempts_out = {}, {}, {}

-- Lease ids whose bodies and current attempt counts are given (all calls batched).
local function lease(ids, bodies, attempts)
  for i, id in ipairs(ids) do
    seq = seq + 1
    local attempt = (tonumber(attempts[i]) or 0) + 1
    leases[#leases + 1] = until_ms
    leases[#leases + 1] = id
    tokens[#tokens + 1] = id
    tokens[#tokens + 1] = seq
    attempts_out[#attempts_out + 1] = id
    attempts_out[#attempts_out + 1] = attempt
    out[#out + 1] = seq .. ':' .. attempt .. ':' .. bodies[i]
  end
end

-- 1. Leases that expired (the worker died): take them over first, so a dead worker's tasks
--    do not wait behind the whole backlog. Attempts spent: dead-letter instead, and report.
local expired = redis.call('ZRANGEBYSCORE', KEYS[7], '-inf', now, 'LIMIT', 0, n)
if #expired > 0 then
  local counts = redis.call('HMGET', KEYS[4], unpack(expired))
  local bodies = redis.call('HMGET', KEYS[3], unpack(expired))
  local again, again_bodies, again_attempts = {}, {}, {}
  for i, id in ipairs(expired) do
    local attempts = tonumber(counts[i]) or 0
    if attempts >= max_attempts then
      local err = 'lease expired on attempt ' .. attempts .. ' of ' .. max_attempts
        .. ' (the worker died or was killed)'
      redis.call('ZREM', KEYS[7], id)
      redis.call('ZADD', KEYS[9], now, id)
      redis.call('HSET', KEYS[10], id, err)
      dead_out[#dead_out + 1] = attempts
      dead_out[#dead_out + 1] = err
      dead_out[#dead_out + 1] = bodies[i]
    else
      again[#again + 1] = id
      again_bodies[#again_bodies + 1] = bodies[i]
      again_attempts[#again_attempts + 1] = attempts
    end
  end
  if #again > 0 then
    lease(again, again_bodies, again_attempts)
  end
end

-- 2. Delayed retries that are due join the end of the ready list.
local due = redis.call('ZRANGEBYSCORE', KEYS[8], '-inf', now, 'LIMIT', 0, 1000)
if #due > 0 then
  redis.call('ZREM', KEYS[8], unpack(due))
  redis.call('RPUSH', KEYS[6], unpack(due))
end

-- 3. Visible tasks, in order. Ids whose body is gone were acked while waiting: drop them.
while #out - 3 < n do
  local ids = redis.call('LPOP', KEYS[6], n - (#out - 3))
  if not ids then break end
  local bodies = redis.call('HMGET', KEYS[3], unpack(ids))
  local counts = redis.call('HMGET', KEYS[4], unpack(ids))
  local live, live_bodies, live_counts = {}, {}, {}
  local stale = 0
  for i, id in ipairs(ids) do
    if bodies[i] then
      live[#live + 1] = id
      live_bodies[#live_bodies + 1] = bodies[i]
      live_counts[#live_counts + 1] = counts[i]
    else
      stale = stale + 1
    end
  end
  if stale > 0 then redis.call('HINCRBY', KEYS[1], 'stale', -stale) end
  lease(live, live_bodies, live_counts)
end

if #leases > 0 then
  chunked('ZADD', KEYS[7], leases)
  chunked('HSET', KEYS[5], tokens)
  chunked('HSET', KEYS[4], attempts_out)
  redis.call('HSET', KEYS[1], 'seq', seq)
else
  local hint = -1
  for _, key in ipairs({KEYS[7], KEYS[8]}) do
    local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    if #first > 0 then
      local ms = math.max(0, tonumber(first[2]) - now)
      if hint < 0 or ms < hint then hint = ms end
    end
  end
  out[1] = hint
end
return out
"""
)

# ARGV: n, id1 .. idn (n at most 1000), then, only where the queue holds waiting tasks, for
# each id: id, its result (JSON), the ids it waited for joined by newlines ('' for none: the
# client knows them from the message, so the queue keeps no copy)  ->  number completed.
# In a queue that holds waiting tasks (meta.flows), a completed task that others wait for keeps
# its result (JSON null when none was given) for them, and each of them whose last dependency
# this was joins the ready list: here, once, as the counter falls to zero inside this script.
ACK = (
    _CHUNKED
    + _HMGET
    + """
local n = tonumber(ARGV[1])
local flows = redis.call('HGET', KEYS[1], 'flows')
local done = {}
local stale, held = 0, 0  -- held: waiting tasks without a count, completed or released here
local scores = redis.call('ZMSCORE', KEYS[7], unpack(ARGV, 2, n + 1))
local leased = {}
for i = 1, n do
  local id = ARGV[i + 1]
  if scores[i] then
    leased[#leased + 1] = id
    done[#done + 1] = id
  elseif redis.call('ZREM', KEYS[8], id) == 1 then
    done[#done + 1] = id
  elseif flows and redis.call('HDEL', KEYS[11], id) == 1 then
    done[#done + 1] = id   -- waiting for its dependencies: in no list
  elseif redis.call('HEXISTS', KEYS[3], id) == 1 and not redis.call('ZSCORE', KEYS[9], id) then
    done[#done + 1] = id
    -- Waiting in the ready list (left there, dropped when popped), or, where tasks wait for
    -- one id without a count, held: then it is in no list. Only this rare ack looks.
    if flows and tonumber(redis.call('HGET', KEYS[1], 'held') or '0') > 0
        and not redis.call('LPOS', KEYS[6], id) then
      held = held + 1
    else
      stale = stale + 1
    end
  end
end
if #leased > 0 then redis.call('ZREM', KEYS[7], unpack(leased)) end
if #done > 0 then
  for _, key in ipairs({KEYS[3], KEYS[4], KEYS[5], KEYS[10]}) do
    redis.call('HDEL', key, unpack(done))
  end
  redis.call('HINCRBY', KEYS[1], 'completed', #done)
end
if stale > 0 then redis.call('HINCRBY', KEYS[1], 'stale', stale) end
if not flows or #done == 0 then
  if held > 0 then redis.call('HINCRBY', KEYS[1], 'held', -held) end
  return #done
end

local results, waited = {}, {}
for i = n + 2, #ARGV, 3 do
  results[ARGV[i]] = ARGV[i + 1]
  if ARGV[i + 2] ~= '' then waited[ARGV[i]] = ARGV[i + 2] end
end
local nexts = redis.call('HMGET', KEYS[12], unpack(done))
local visible, unread, kept, counts, gone, stray = {}, {}, {}, {}, {}, {}
for i, id in ipairs(done) do
  if nexts[i] then
    local readers = 0
    local waiters = {}
    for waiter in string.gmatch(nexts[i], '[^\\n]+') do waiters[#waiters + 1] = waiter end
    -- A waiter with a count counts down; one without waits for this id alone (or, loaded
    -- before counts were left out for those, acked itself while waiting): its body says
    -- which. A waiter is in the list of a task not done yet, so it cannot have run.
    -- A list of one (a part of a fan-in) counts down at once: one call when it has a count,
    -- and a count made at -1 is taken back when it has none.
    local lefts = #waiters > 1 and hmget(KEYS[11], waiters) or {true}
    local alone = {}
    for j, waiter in ipairs(waiters) do
      local left = lefts[j] and redis.call('HINCRBY', KEYS[11], waiter, -1) or -1
      if left <= 0 and lefts[j] then redis.call('HDEL', KEYS[11], waiter) end
      if left == 0 then visible[#visible + 1] = waiter end
      if left >= 0 then readers = readers + 1 else alone[#alone + 1] = waiter end
    end
    if #alone > 0 then
      local bodies = hmget(KEYS[3], alone)
      for j, waiter in ipairs(alone) do
        if bodies[j] then
          visible[#visible + 1] = waiter
          readers = readers + 1
          held = held + 1
        end
      end
    end
    if readers > 0 then
      kept[#kept + 1] = id
      kept[#kept + 1] = results[id] or 'null'
      counts[#counts + 1] = id
      counts[#counts + 1] = readers
    else
      unread[#unread + 1] = id  -- nobody left to read it: its edges go now
    end
  end
  -- A task that read results is done: the results nobody else needs go.
  if waited[id] then
    for dep in string.gmatch(waited[id], '[^\\n]+') do
      local left = redis.call('HINCRBY', KEYS[14], dep, -1)
      if left == 0 then
        gone[#gone + 1] = dep  -- all that waited for it are done: its result and edges go
      elseif left < 0 then
        stray[#stray + 1] = dep  -- not counted (see below): only the -1 just made goes
      end
    end
  end
end
-- Deletions first: a dependency completed by this very call (or not yet) has no readers
-- count, so a task done in this call that waited for it, and was not counted, made a -1.
if #stray > 0 then chunked('HDEL', KEYS[14], stray) end
if #gone > 0 then
  chunked('HDEL', KEYS[14], gone)
  chunked('HDEL', KEYS[13], gone)
  chunked('HDEL', KEYS[12], gone)
end
if #kept > 0 then
  chunked('HSET', KEYS[13], kept)
  chunked('HSET', KEYS[14], counts)
end
if #unread > 0 then redis.call('HDEL', KEYS[12], unpack(unread)) end
if #visible > 0 then chunked('RPUSH', KEYS[6], visible) end
if held > 0 then redis.call('HINCRBY', KEYS[1], 'held', -held) end
return #done
"""
)

# ARGV: id, token, delay_ms, has_error (0/1), error
# -> 1 retried (or the lease had passed on: nothing to do), 0 dead-lettered
RETRY = (
    _PROLOGUE
    + _HOLDS
    + """
local id = ARGV[1]
if not holds(id, ARGV[2]) then return 1 end
if ARGV[4] == '1' then
  redis.call('HSET', KEYS[10], id, ARGV[5])
else
  redis.call('HDEL', KEYS[10], id)
end
redis.call('ZREM', KEYS[7], id)
if tonumber(redis.call('HGET', KEYS[4], id) or '0') >= max_attempts then
  redis.call('ZADD', KEYS[9], now, id)
  return 0
end
local delay = tonumber(ARGV[3])
if delay <= 0 then
  redis.call('RPUSH', KEYS[6], id)
else
  redis.call('ZADD', KEYS[8], now + delay, id)
end
return 1
"""
)

# ARGV: id, token, has_error (0/1), error  ->  1 dead-lettered, 0 the lease had passed on
DEAD_LETTER = (
    _PROLOGUE
    + _HOLDS
    + """
local id = ARGV[1]
if not holds(id, ARGV[2]) then return 0 end
redis.call('ZREM', KEYS[7], id)
redis.call('ZADD', KEYS[9], now, id)
if ARGV[3] == '1' then
  redis.call('HSET', KEYS[10], id, ARGV[4])
else
  redis.call('HDEL', KEYS[10], id)
end
return 1
"""
)

# ARGV: id1, token1, id2, token2, ...  ->  number released. The delivery is not counted, and
# the tasks go to the head of the ready list (in their given order): they were next in line.
RELEASE = (
    _HOLDS
    + """
local released = 0
for i = #ARGV - 1, 1, -2 do
  local id = ARGV[i]
  if holds(id, ARGV[i + 1]) then
    redis.call('ZREM', KEYS[7], id)
    if redis.call('HINCRBY', KEYS[4], id, -1) < 0 then redis.call('HSET', KEYS[4], id, 0) end
    redis.call('LPUSH', KEYS[6], id)
    released = released + 1
  end
end
return released
"""
)

# ARGV: lease_ms, id1, token1, id2, token2, ...  ->  number extended
EXTEND = (
    _PROLOGUE
    + _HOLDS
    + """
local until_ms = now + tonumber(ARGV[1])
local extended = 0
for i = 2, #ARGV, 2 do
  if holds(ARGV[i], ARGV[i + 1]) then
    redis.call('ZADD', KEYS[7], 'XX', until_ms, ARGV[i])
    extended = extended + 1
  end
end
return extended
"""
)

# Visits, breadth first, the tasks that wait (directly or through others) for the ids of
# `frontier`, calling visit(id, dependency) once for each, with the id in whose list it was
# found first.
_WAITERS = """
local function each_waiter(frontier, visit)
  local seen = {}
  while #frontier > 0 do
    local found = {}
    for i = 1, #frontier, 1000 do
      local lists = redis.call('HMGET', KEYS[12], unpack(frontier, i, math.min(i + 999, #frontier)))
      for j, list in ipairs(lists) do
        if list then
          for waiter in string.gmatch(list, '[^\\n]+') do
            if not seen[waiter] then
              seen[waiter] = true
              found[#found + 1] = waiter
              visit(waiter, frontier[i + j - 1])
            end
          end
        end
      end
    end
    frontier = found
  end
end
"""

# -> {ready_len, stale, leased, leases_expired, delayed, delayed_due, dead,
#     inserted, duplicates, completed, waiting, blocked}; blocked (the waiting tasks behind a
#     dead letter) is found by walking from the dead letters, only when both exist. Waiting
#     are the tasks with a count and those without (meta.held: they wait for one id).
STATS = (
    _PROLOGUE
    + _WAITERS
    + """
local m = redis.call('HMGET', KEYS[1], 'stale', 'inserted', 'duplicates', 'completed', 'held')
local dead = redis.call('ZCARD', KEYS[9])
local waiting = redis.call('HLEN', KEYS[11]) + tonumber(m[5] or '0')
local blocked = 0
if dead > 0 and waiting > 0 then
  -- Every task of the walk waits, through others, for a dead letter, so it cannot have run:
  -- one with a count waits; one without waits for its one dependency alone, so it waits if
  -- it and that dependency are not done (a task acked while it waited is done).
  each_waiter(redis.call('ZRANGE', KEYS[9], 0, -1), function(id, dep)
    if redis.call('HEXISTS', KEYS[11], id) == 1
        or (redis.call('HEXISTS', KEYS[3], id) == 1 and redis.call('HEXISTS', KEYS[3], dep) == 1)
    then
      blocked = blocked + 1
    end
  end)
end
return {
  redis.call('LLEN', KEYS[6]), tonumber(m[1] or '0'),
  redis.call('ZCARD', KEYS[7]), redis.call('ZCOUNT', KEYS[7], '-inf', now),
  redis.call('ZCARD', KEYS[8]), redis.call('ZCOUNT', KEYS[8], '-inf', now),
  dead,
  tonumber(m[2] or '0'), tonumber(m[3] or '0'), tonumber(m[4] or '0'),
  waiting, blocked,
}
"""
)

# ARGV: ids  ->  the ids of the tasks that wait for them, directly or through others, and are
# not done, in breadth-first order
DEPENDENTS = (
    _WAITERS
    + """
local out = {}
each_waiter(ARGV, function(id)
  if redis.call('HEXISTS', KEYS[3], id) == 1 then out[#out + 1] = id end
end)
return out
"""
)

# ARGV: 'all', chunk  |  'ids', id1, id2, ...  ->  number moved back, with fresh attempts
REDRIVE = """
local ids
if ARGV[1] == 'all' then
  ids = redis.call('ZRANGE', KEYS[9], 0, tonumber(ARGV[2]) - 1)
else
  ids = {}
  for i = 2, #ARGV do
    if redis.call('ZSCORE', KEYS[9], ARGV[i]) then ids[#ids + 1] = ARGV[i] end
  end
end
if #ids == 0 then return 0 end
redis.call('ZREM', KEYS[9], unpack(ids))
redis.call('HDEL', KEYS[4], unpack(ids))
redis.call('RPUSH', KEYS[6], unpack(ids))
return #ids
"""

# Redis 7 reads flags from a script's first line. When the server is at its `maxmemory` under
# `noeviction`, a script without that line may run but every command in it that needs memory
# (ZADD, HSET, HINCRBY) is refused, so a worker could neither lease nor ack: the queue could not
# be drained, although acks free memory. The scripts that drain a queue therefore declare
# `allow-oom`; SEND and REDRIVE declare nothing, so at the limit each of their calls is refused
# whole before it runs, and a load counts exactly what went in. Older servers read no first
# line: the scripts go to them as they are (and a full Redis 6 cannot be drained).
FLAGS_FROM_VERSION = (7, 0)
_FLAGS: dict[str, str] = {
    "SEND": "",
    "SEND_FLOW": "",
    "SEND_UPDATE": "",
    "REDRIVE": "",
    "RECEIVE": "allow-oom",
    "ACK": "allow-oom",
    "RETRY": "allow-oom",
    "DEAD_LETTER": "allow-oom",
    "RELEASE": "allow-oom",
    "EXTEND": "allow-oom",
    "STATS": "allow-oom,no-writes",
    "DEPENDENTS": "allow-oom,no-writes",
}


def script(name: str, server_version: tuple[int, ...]) -> str:
    """The script `name` as the server of `server_version` should get it."""
    body: str = globals()[name]
    if server_version < FLAGS_FROM_VERSION:
        return body
    flags = _FLAGS[name]
    return (f"#!lua flags={flags}" if flags else "#!lua") + "\n" + body
