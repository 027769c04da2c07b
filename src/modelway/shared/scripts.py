"""The Lua scripts that check and take shared state in one step on the Redis server.

Every check-and-take is one script (EVALSHA of a loaded script): Redis runs
a script alone, so two processes racing for the last unit cannot both get it.

Keys (one Redis database, not a cluster: scripts name the keys they build):

    mw:epoch                  the marker: the id of the current state; missing after a Redis restart
    mw:epoch:run              Redis's run_id when the marker was set (differs after a restart from a snapshot)
    mw:credit-adds            counts operator credit adds made while no marker stood
    mw:credit-intents         sorted set: "<account>|<id>" of operator credit changes under way (CLI),
                              scored by when the intent lapses (ms, Redis's clock)
    mw:credit-done:<id>       what CREDIT_ADD answered for the change <id> (a retry gets the same answer)
    mw:rebuild                the lock of the one process rebuilding the state from the store
    mw:epoch:last             the epoch installed last (still current, or rebuilt away since)
    mw:epochs:old             epochs whose keys are garbage (rebuilt away, or built by a rebuild that lost)
    mw:<E>:procs              processes that registered their holds in epoch E
    mw:<E>:a:<account>        hash: bal (balance of record as Redis knows it), held (reservations and
                              charges not yet written, of every process), h:<proc> (one process's part)
    mw:<E>:k:<key>            hash: held (tokens held by calls under way), h:<proc>
    mw:<E>:t:<proc>           set: the a:<account> and k:<key> hashes where the process has an h:<proc>
    mw:<E>:alive:<proc>       set by the process every second, expiring after process_timeout_seconds
    mw:<E>:gen:<proc>         the generation of the process's last registration in E (see _GATE)
    mw:<E>:u:<day>:<key>      tokens the key used that UTC day
    mw:<E>:opening            set for a moment after a rebuild: every live process registers, none takes
    mw:<E>:op:<id>            a balance move (CREDIT_CHANGE) or a budget settle (BUDGET_SETTLE, CALL_SETTLE) that ran,
                              or was settled after its reply was lost
    mw:rh:<window>:<scope>    hash: n (requests counted in one minute window), h:<proc> (one process's
                              part); expires with the window

Every script answers a list whose first item is "OK" or why not: NOEPOCH (no
marker: Redis lost its state), STALE (the caller's epoch is not the current
one), UNREGISTERED (the caller has not registered its holds in this epoch).
"""

from __future__ import annotations

__all__ = [
    "BUDGET_HOLD",
    "BUDGET_RECONCILE",
    "BUDGET_SETTLE",
    "BUDGET_SETTLE_ARGS",
    "CALL_ADMIT",
    "CALL_SETTLE",
    "CREDIT_ADD",
    "CREDIT_CHANGE",
    "CREDIT_INTENT",
    "CREDIT_RECONCILE",
    "CREDIT_RESERVE",
    "CREDIT_SEED",
    "CREDIT_SETTLE",
    "EPOCH_FORCE",
    "EPOCH_INSTALL",
    "RATE_ACQUIRE",
    "REAP",
    "REBUILD_GIVE_UP",
    "REGISTER",
]

# Redis's clock in milliseconds (scripts may read it: Redis 7 replicates their effects, not the scripts).
_NOW = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
"""

# ARGV[2] of the scripts that take or give is "<proc>#<generation>": the registration the caller sent
# it under. A script sent under an older one (its caller gave up on it, then registered again: the
# registration's absolute amounts already undid it) does nothing if it reaches Redis after that.
_GATE = """
local epoch = ARGV[1]
local proc, generation = string.match(ARGV[2], '^(.*)#(%d+)$')
local current = redis.call('GET', 'mw:epoch')
if not current then return {'NOEPOCH'} end
if current ~= epoch then return {'STALE'} end
local prefix = 'mw:' .. epoch .. ':'
if redis.call('SISMEMBER', prefix .. 'procs', proc) == 0 then return {'UNREGISTERED'} end
if redis.call('GET', prefix .. 'gen:' .. proc) ~= generation then return {'UNREGISTERED'} end
local mine = 'h:' .. proc
local touched = prefix .. 't:' .. proc
"""

# ARGV: epoch, proc, window, ttl, then (scope, limit) pairs. Checks every rule before counting
# any (limits.RateLimiter's semantics): {'OK', used...} or {'LIMIT', index of the refusing rule}.
# Each count also files the caller's part (h:<proc>), so that a process can register again what it
# counted this minute after Redis lost the counters (REGISTER).
RATE_ACQUIRE = (
    _GATE
    + """
local window, ttl = ARGV[3], tonumber(ARGV[4])
local keys = {}
for i = 5, #ARGV, 2 do
  local key = 'mw:rh:' .. window .. ':' .. ARGV[i]
  local used = tonumber(redis.call('HGET', key, 'n') or '0')
  if used >= tonumber(ARGV[i + 1]) then return {'LIMIT', (i - 3) / 2} end
  keys[#keys + 1] = key
end
local result = {'OK'}
for _, key in ipairs(keys) do
  result[#result + 1] = redis.call('HINCRBY', key, 'n', 1)
  redis.call('HINCRBY', key, mine, 1)
  redis.call('EXPIRE', key, ttl)
end
return result
"""
)

# A key's daily token budget (budgets.TokenBudgets' rule: admitted while used + held is under the
# budget), as functions of the scripts that take or give tokens (after _GATE: they use its locals).
_TOKENS = """
local function token_keys(key_id, day)
  return prefix .. 'k:' .. key_id, prefix .. 'u:' .. day .. ':' .. key_id
end
local function tokens_refusal(key_id, day, budget)
  local key, used_key = token_keys(key_id, day)
  local used = tonumber(redis.call('GET', used_key) or '0')
  local held = tonumber(redis.call('HGET', key, 'held') or '0')
  if used + held >= tonumber(budget) then return {'OVER', used, held} end
end
local function tokens_hold(key_id, day, tokens)
  local key = token_keys(key_id, day)
  redis.call('HINCRBY', key, 'held', tokens)
  redis.call('HINCRBY', key, mine, tokens)
  redis.call('SADD', touched, 'k:' .. key_id)
end
-- Counted once per operation id (filed as mw:<E>:op:<id>): false for a copy of one already counted.
local function tokens_settle(key_id, day, held, used, day_ttl, op, op_ttl)
  if not redis.call('SET', prefix .. 'op:' .. op, 1, 'NX', 'EX', op_ttl) then return false end
  local key, used_key = token_keys(key_id, day)
  redis.call('HINCRBY', key, 'held', 0 - tonumber(held))
  redis.call('HINCRBY', key, mine, 0 - tonumber(held))
  redis.call('INCRBY', used_key, used)
  redis.call('EXPIRE', used_key, day_ttl)
  return true
end
"""

# An account's credits (ledger.Ledger's rule: available = balance - held), as functions likewise.
_CREDITS = """
-- What the account has available, and the refusal of reserving `amount` of it, if refused:
-- {'NOACCOUNT'} (no balance here: not seeded yet) or {'SHORT', available}.
local function credits_refusal(account, amount)
  local key = prefix .. 'a:' .. account
  local bal = redis.call('HGET', key, 'bal')
  if not bal then return nil, {'NOACCOUNT'} end
  local available = tonumber(bal) - tonumber(redis.call('HGET', key, 'held') or '0')
  if amount > 0 and available < amount then return available, {'SHORT', available} end
  return available, nil
end
local function credits_hold(account, amount)
  local key = prefix .. 'a:' .. account
  redis.call('HINCRBY', key, 'held', amount)
  redis.call('HINCRBY', key, mine, amount)
  redis.call('SADD', touched, 'a:' .. account)
end
-- Releases a reservation and holds the real cost (a charge not yet written), never beyond what is
-- available: the charge and what is available after it. A hash without a balance (never expected:
-- EPOCH_INSTALL keeps every one) charges up to what was reserved, which was available when it was
-- made: a call is never served free for want of it.
local function credits_settle(account, reserved, cost)
  local key = prefix .. 'a:' .. account
  reserved, cost = tonumber(reserved), tonumber(cost)
  local held = tonumber(redis.call('HGET', key, 'held') or '0') - reserved
  local bal = redis.call('HGET', key, 'bal')
  local available = bal and (tonumber(bal) - held) or reserved
  local charged = math.max(0, math.min(cost, available))
  redis.call('HINCRBY', key, 'held', charged - reserved)
  redis.call('HINCRBY', key, mine, charged - reserved)
  return charged, available - charged
end
"""

# ARGV: epoch, proc, key id, day, budget, worst case. {'OK'} or {'OVER', used, held}.
BUDGET_HOLD = (
    _GATE
    + _TOKENS
    + """
local refused = tokens_refusal(ARGV[3], ARGV[4], ARGV[5])
if refused then return refused end
tokens_hold(ARGV[3], ARGV[4], ARGV[6])
return {'OK'}
"""
)

# ARGV: epoch, proc, key id, day, tokens held, tokens used, ttl of the day's counter, operation id,
# its ttl. The operation id is filed (mw:<E>:op:<id>), as CREDIT_CHANGE's: a settle whose reply never
# came is counted by BUDGET_RECONCILE only if it never ran, and a copy arriving after that does nothing.
BUDGET_SETTLE_ARGS = 7  # after the epoch and the proc: CALL_SETTLE's begin with the same seven
BUDGET_SETTLE = (
    _GATE
    + _TOKENS
    + """
tokens_settle(ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9])
return {'OK'}
"""
)

# ARGV: epoch, proc, account, amount. {'OK', available after} or {'SHORT', available} or {'NOACCOUNT'}.
CREDIT_RESERVE = (
    _GATE
    + _CREDITS
    + """
local amount = tonumber(ARGV[4])
local available, short = credits_refusal(ARGV[3], amount)
if short then return short end
credits_hold(ARGV[3], amount)
return {'OK', available - amount}
"""
)

# ARGV: epoch, proc, account, reserved amount, cost. {'OK', charged, available after}.
CREDIT_SETTLE = (
    _GATE
    + _CREDITS
    + """
local charged, available = credits_settle(ARGV[3], ARGV[4], ARGV[5])
return {'OK', charged, available}
"""
)

# A call's admission in one round trip: BUDGET_HOLD and CREDIT_RESERVE together, each checked
# before either is taken (so a refused call holds nothing). ARGV: epoch, proc, key id, day, budget,
# worst case, account, amount. {'OK', available after}, or the refusal of the first that refuses,
# in that order: {'OVER', used, held}, {'NOACCOUNT'}, {'SHORT', available}.
CALL_ADMIT = (
    _GATE
    + _TOKENS
    + _CREDITS
    + """
local refused = tokens_refusal(ARGV[3], ARGV[4], ARGV[5])
if refused then return refused end
local amount = tonumber(ARGV[8])
local available, short = credits_refusal(ARGV[7], amount)
if short then return short end
tokens_hold(ARGV[3], ARGV[4], ARGV[6])
credits_hold(ARGV[7], amount)
return {'OK', available - amount}
"""
)

# A call's settling in one round trip: BUDGET_SETTLE and CREDIT_SETTLE together. ARGV: BUDGET_SETTLE's
# (the first nine, so that one whose reply never came is settled as a BUDGET_SETTLE is: see
# SharedLink), then account, reserved amount, cost. {'OK', charged, available after}; a copy of one
# already counted does nothing: {'DONE'}.
CALL_SETTLE = (
    _GATE
    + _TOKENS
    + _CREDITS
    + """
if not tokens_settle(ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9]) then return {'DONE'} end
local charged, available = credits_settle(ARGV[10], ARGV[11], ARGV[12])
return {'OK', charged, available}
"""
)

# ARGV: epoch, "<proc>#<generation>", operation id, sign, then (account, amount) pairs. sign 1:
# charges about to be written to the store leave `held` for `bal` (a refund, a negative charge, too);
# sign -1 undoes that after the write failed. The operation id is filed (mw:<E>:op:<id>): a copy that
# arrives after CREDIT_RECONCILE settled the operation does nothing. {'OK', epoch} (the epoch they
# moved in: see SharedLink.credits_moving). An account hash without a balance (never expected) would
# take a balance into existence from nothing: the marker is dropped instead ({'NOEPOCH'}, nothing
# moved), so that the state is rebuilt from the store, and the write is tried again after it.
CREDIT_CHANGE = (
    _GATE
    + """
local op = prefix .. 'op:' .. ARGV[3]
if redis.call('EXISTS', op) == 1 then return {'OK', epoch} end
for i = 5, #ARGV, 2 do
  if redis.call('HEXISTS', prefix .. 'a:' .. ARGV[i], 'bal') == 0 then
    redis.call('DEL', 'mw:epoch')
    return {'NOEPOCH'}
  end
end
redis.call('SET', op, ARGV[4], 'EX', 600)
local sign = tonumber(ARGV[4])
for i = 5, #ARGV, 2 do
  local key, amount = prefix .. 'a:' .. ARGV[i], sign * tonumber(ARGV[i + 1])
  redis.call('HINCRBY', key, 'bal', 0 - amount)
  redis.call('HINCRBY', key, 'held', 0 - amount)
  redis.call('HINCRBY', key, mine, 0 - amount)
end
return {'OK', epoch}
"""
)

# ARGV: epoch, proc (no generation: it runs just before the registration that makes a new one),
# operation id, sign, wanted (1: the move must have happened, 0: it must not), then the
# CREDIT_CHANGE's (account, amount) pairs. Settles a CREDIT_CHANGE whose reply never came
# (a timeout: it may have run, or may still arrive): run now if it never ran and the process counted
# it as done, undone if it ran and the process counted it as not done; either way filed as settled,
# so a late copy does nothing. {'OK'} or {'STALE'} (another epoch: the rebuild read the store).
CREDIT_RECONCILE = """
if redis.call('GET', 'mw:epoch') ~= ARGV[1] then return {'STALE'} end
local prefix, mine = 'mw:' .. ARGV[1] .. ':', 'h:' .. ARGV[2]
local op = prefix .. 'op:' .. ARGV[3]
local ran = redis.call('GET', op)
local factor = 0
if ARGV[5] == '1' and not ran then factor = 1 end
if ARGV[5] == '0' and ran == ARGV[4] then factor = -1 end
redis.call('SET', op, 'settled', 'EX', 600)
if factor ~= 0 then
  local sign = factor * tonumber(ARGV[4])
  for i = 6, #ARGV, 2 do
    local key, amount = prefix .. 'a:' .. ARGV[i], sign * tonumber(ARGV[i + 1])
    redis.call('HINCRBY', key, 'bal', 0 - amount)
    redis.call('HINCRBY', key, 'held', 0 - amount)
    redis.call('HINCRBY', key, mine, 0 - amount)
  end
end
return {'OK', factor}
"""

# ARGV: epoch, operation id, its ttl, key id, day, tokens used, ttl of the day's counter. Settles a
# BUDGET_SETTLE (or a CALL_SETTLE's tokens) whose reply never came (cut off, or refused
# NOEPOCH/UNREGISTERED): the tokens are added to the day's use only if it never ran; filed as
# settled either way, so a late copy does nothing. Its hold needs nothing here: the registration
# that follows sets the process's holds.
# {'OK', 1 if counted now else 0} or {'STALE'} (another epoch: its rebuild read the store).
BUDGET_RECONCILE = """
if redis.call('GET', 'mw:epoch') ~= ARGV[1] then return {'STALE'} end
local prefix = 'mw:' .. ARGV[1] .. ':'
if not redis.call('SET', prefix .. 'op:' .. ARGV[2], 'settled', 'NX', 'EX', ARGV[3]) then return {'OK', 0} end
local used = prefix .. 'u:' .. ARGV[5] .. ':' .. ARGV[4]
redis.call('INCRBY', used, ARGV[6])
redis.call('EXPIRE', used, ARGV[7])
return {'OK', 1}
"""

# ARGV: epoch, account, balance read from the store. Sets the balance of an account this epoch
# does not know yet (created after the rebuild); never overwrites one. While the operator changes the
# account's credits (a live intent, see CREDIT_INTENT) the store may or may not have the change yet:
# nothing is set, and the caller is refused for a moment. {'OK'}, {'STALE'} or {'BUSY'}.
CREDIT_SEED = (
    _NOW
    + """
if redis.call('GET', 'mw:epoch') ~= ARGV[1] then return {'STALE'} end
local mine = ARGV[2] .. '|'
for _, intent in ipairs(redis.call('ZRANGEBYSCORE', 'mw:credit-intents', '(' .. now, '+inf')) do
  if string.sub(intent, 1, #mine) == mine then return {'BUSY'} end
end
redis.call('HSETNX', 'mw:' .. ARGV[1] .. ':a:' .. ARGV[2], 'bal', ARGV[3])
return {'OK'}
"""
)

# ARGV: account, change id, how long the intent lives (ms). The operator (CLI) is about to change the
# account's credits in the store: until CREDIT_ADD says how, no seed sets the account's balance from
# the store (it may have read it before or after the commit), and no rebuild is installed (EPOCH_INSTALL
# answers AGAIN: its store read may have missed the commit). An intent that lapses
# without its CREDIT_ADD (the CLI died, or lost Redis) has the state rebuilt from the store (REAP).
# {'OK'}.
CREDIT_INTENT = (
    _NOW
    + """
redis.call('ZADD', 'mw:credit-intents', now + tonumber(ARGV[3]), ARGV[1] .. '|' .. ARGV[2])
return {'OK'}
"""
)

# ARGV: account, amount the store applied, balance in the store after it, change id. Credits the
# operator (CLI) changed in the store, after the store committed, announced by CREDIT_INTENT:
# - OK: counted now (added to the balance this epoch knows; an account it does not know yet, or
#   lost, gets the store's balance after the change, and no seed can have set one meanwhile).
# - NOEPOCH: no marker, a rebuild is under way or due; mw:credit-adds is bumped, so a rebuild that
#   read the store before the commit starts over (EPOCH_INSTALL). Counted once it is rebuilt.
# - REBUILD: the intent lapsed or was never made (Redis was unreachable): a seed or rebuild since may
#   or may not have read the change, so the marker is dropped and the state rebuilt from the store.
# The answer is kept for an hour under the change id: a retry after a lost reply gets it again and
# changes nothing.
CREDIT_ADD = (
    _NOW
    + """
local done = 'mw:credit-done:' .. ARGV[4]
local answered = redis.call('GET', done)
if answered then return {answered} end
local intent = ARGV[1] .. '|' .. ARGV[4]
local lapses = tonumber(redis.call('ZSCORE', 'mw:credit-intents', intent) or '0')
redis.call('ZREM', 'mw:credit-intents', intent)
local epoch = redis.call('GET', 'mw:epoch')
local outcome = 'OK'
if not epoch then
  redis.call('INCR', 'mw:credit-adds')
  outcome = 'NOEPOCH'
elseif lapses <= now then
  redis.call('DEL', 'mw:epoch')
  outcome = 'REBUILD'
else
  local key = 'mw:' .. epoch .. ':a:' .. ARGV[1]
  if redis.call('HEXISTS', key, 'bal') == 0 then
    redis.call('HSET', key, 'bal', ARGV[3])
  else
    redis.call('HINCRBY', key, 'bal', ARGV[2])
  end
end
redis.call('SET', done, outcome, 'EX', 3600)
return {outcome}
"""
)

# ARGV: epoch, "<proc>#<generation>", minute window, its ttl, day, its ttl, account count, key count,
# scope count, then (account, held)..., (key, held)..., (scope, requests counted this minute)..., and
# last (key, tokens of usage rows not yet written today)... What this process holds and counted, as
# absolute values (idempotent): its part of every total is replaced, and its part of a hash it
# touched and no longer names (a take whose reply it never saw) is dropped. The unwritten tokens are
# added to the day's use only on the process's first registration in the epoch: a rebuilt state read
# the day's use from the store, which lacks them; later they reach it with their rows. The generation
# grows with each registration of the process: scripts sent under an older one are refused from now
# on (_GATE), and so is an older registration arriving late.
# {'OK', ms until the epoch opens for takes (negative: open), 1 if this is the process's first
# registration in the epoch else 0}, {'STALE'} or {'OLD'}.
REGISTER = """
local epoch = ARGV[1]
local proc, generation = string.match(ARGV[2], '^(.*)#(%d+)$')
if redis.call('GET', 'mw:epoch') ~= epoch then return {'STALE'} end
local prefix, mine = 'mw:' .. epoch .. ':', 'h:' .. proc
local registered = prefix .. 'gen:' .. proc
if tonumber(redis.call('GET', registered) or '-1') >= tonumber(generation) then return {'OLD'} end
redis.call('SET', registered, generation)
local touched = prefix .. 't:' .. proc
local window, window_ttl, day, day_ttl = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local accounts, keys, scopes = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local named = {}
local index = 10
for n = 1, accounts + keys do
  local kind = (n <= accounts) and 'a:' or 'k:'
  named[kind .. ARGV[index]] = tonumber(ARGV[index + 1])
  index = index + 2
end
for _, name in ipairs(redis.call('SMEMBERS', touched)) do
  if not named[name] then named[name] = 0 end
end
redis.call('DEL', touched)
for name, amount in pairs(named) do
  local key = prefix .. name
  local old = tonumber(redis.call('HGET', key, mine) or '0')
  if amount ~= old then redis.call('HINCRBY', key, 'held', amount - old) end
  if amount == 0 then
    redis.call('HDEL', key, mine)
  else
    redis.call('HSET', key, mine, amount)
    redis.call('SADD', touched, name)
  end
end
for n = 1, scopes do
  local key, counted = 'mw:rh:' .. window .. ':' .. ARGV[index], tonumber(ARGV[index + 1])
  local old = tonumber(redis.call('HGET', key, mine) or '0')
  if counted ~= old then
    redis.call('HINCRBY', key, 'n', counted - old)
    redis.call('HSET', key, mine, counted)
    redis.call('EXPIRE', key, window_ttl)
  end
  index = index + 2
end
local first = redis.call('SADD', prefix .. 'procs', proc)
if first == 1 then
  for i = index, #ARGV, 2 do
    local used = prefix .. 'u:' .. day .. ':' .. ARGV[i]
    redis.call('INCRBY', used, ARGV[i + 1])
    redis.call('EXPIRE', used, day_ttl)
  end
end
return {'OK', redis.call('PTTL', prefix .. 'opening'), first}
"""

# ARGV: new epoch, proc (the lock holder), Redis's run_id, mw:credit-adds as read before the store,
# the opening in ms. Makes the rebuilt state current if this process still holds the rebuild lock
# and no operator credits arrived meanwhile; mw:<E>:opening lasts the opening (every live process
# registers meanwhile, takes nothing). While the operator is changing an account's credits (a live
# intent) nothing is installed: the store was read before or after that commit, nobody knows which,
# and forgetting the balance instead would let calls in flight settle against no balance. The rebuild
# is tried again (the CLI's commit takes milliseconds; a dead CLI's intent lapses). Lapsed intents are
# dropped here (no epoch stands, so REAP cannot), and the store is read once more after them. The epoch
# it replaces, or the new one if it is not installed, is filed for deletion (mw:epochs:old).
# {'OK'}, {'LOST'} or {'AGAIN', why} (lock dropped: rebuild once more; why: 'adds' or 'intent').
EPOCH_INSTALL = (
    _NOW
    + """
if redis.call('GET', 'mw:rebuild') ~= ARGV[2] then
  redis.call('SADD', 'mw:epochs:old', ARGV[1])
  return {'LOST'}
end
redis.call('DEL', 'mw:rebuild')
if (redis.call('GET', 'mw:credit-adds') or '0') ~= ARGV[4] then
  redis.call('SADD', 'mw:epochs:old', ARGV[1])
  return {'AGAIN', 'adds'}
end
local lapsed = redis.call('ZREMRANGEBYSCORE', 'mw:credit-intents', '-inf', now)
if lapsed > 0 or redis.call('ZCARD', 'mw:credit-intents') > 0 then
  redis.call('SADD', 'mw:epochs:old', ARGV[1])
  return {'AGAIN', 'intent'}
end
local last = redis.call('GET', 'mw:epoch:last')
if last and last ~= ARGV[1] then redis.call('SADD', 'mw:epochs:old', last) end
redis.call('SET', 'mw:epoch:last', ARGV[1])
redis.call('SET', 'mw:' .. ARGV[1] .. ':opening', 1, 'PX', ARGV[5])
redis.call('SET', 'mw:epoch', ARGV[1])
redis.call('SET', 'mw:epoch:run', ARGV[3])
return {'OK'}
"""
)

# ARGV: epoch. Drops the marker if it is still this epoch, so that the state is rebuilt from the
# store (a charge may have been written while the state was being rebuilt). {'OK'}.
EPOCH_FORCE = """
if redis.call('GET', 'mw:epoch') == ARGV[1] then redis.call('DEL', 'mw:epoch') end
return {'OK'}
"""

# ARGV: proc. A rebuild that failed half-way drops its lock, if it still holds it. {'OK'}.
REBUILD_GIVE_UP = """
if redis.call('GET', 'mw:rebuild') == ARGV[1] then redis.call('DEL', 'mw:rebuild') end
return {'OK'}
"""

# ARGV: epoch. Releases what processes that stopped refreshing their alive key (crashed) held.
# Tokens are given back at once. Credits held by a gone process may be charges it wrote to the
# store without telling Redis (it stopped while Redis did not answer): the marker is dropped so
# that the state is rebuilt from the store. So it is when an operator's credit change lapsed
# without its CREDIT_ADD (the store may have it, Redis does not).
# {'OK', processes released}, {'REBUILD', proc}, {'LAPSED', account}, {'STALE'}.
REAP = (
    _NOW
    + """
if redis.call('GET', 'mw:epoch') ~= ARGV[1] then return {'STALE'} end
local lapsed = redis.call('ZRANGEBYSCORE', 'mw:credit-intents', '-inf', now, 'LIMIT', 0, 1)
if #lapsed > 0 then
  redis.call('ZREMRANGEBYSCORE', 'mw:credit-intents', '-inf', now)
  redis.call('DEL', 'mw:epoch')
  return {'LAPSED', string.match(lapsed[1], '^(.*)|[^|]*$')}
end
local prefix = 'mw:' .. ARGV[1] .. ':'
local gone = 0
for _, proc in ipairs(redis.call('SMEMBERS', prefix .. 'procs')) do
  if redis.call('EXISTS', prefix .. 'alive:' .. proc) == 0 then
    local touched, mine = prefix .. 't:' .. proc, 'h:' .. proc
    local names = redis.call('SMEMBERS', touched)
    for _, name in ipairs(names) do
      local held = tonumber(redis.call('HGET', prefix .. name, mine) or '0')
      if held ~= 0 and string.sub(name, 1, 2) == 'a:' then
        redis.call('DEL', 'mw:epoch')
        return {'REBUILD', proc}
      end
    end
    for _, name in ipairs(names) do
      local key = prefix .. name
      local held = tonumber(redis.call('HGET', key, mine) or '0')
      -- Never HINCRBY by -0: Lua writes it as "-0", which Redis refuses as not an integer.
      if held ~= 0 then redis.call('HINCRBY', key, 'held', 0 - held) end
      redis.call('HDEL', key, mine)
    end
    redis.call('DEL', touched, prefix .. 'gen:' .. proc)
    redis.call('SREM', prefix .. 'procs', proc)
    gone = gone + 1
  end
end
return {'OK', gone}
"""
)
