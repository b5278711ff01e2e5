-- post_transfers(p_batch jsonb, p_system_shards int) returns setof transfer_outcome
--
-- The only way money moves (docs/decisions/0014): API transfers group-committed by the batcher,
-- holds, the host-credit consumer. Applies a batch of transfers in request order, in the
-- caller's transaction, and answers each one.
--
-- Inputs
--   p_batch          a JSON array of transfer_request objects (types: migration 0007): id, debit,
--                    credit, asset, amount (> 0, minor units), kind, reference, metadata,
--                    hold_id, key (idempotency key), hash (the request's fingerprint, hex),
--                    created_at (the journal time), carried_event_id, requested_by, events
--                    (outbox rows, as outbox_enqueue takes them). Read once, into records.
--   p_system_shards  how many rows each system account is spread over (WALLET_SYSTEM_SHARDS).
--
-- Output: one transfer_outcome per request, in request order (idx = 1-based position):
--   committed        transfer_id and created_at of the new transfer; debit_balance, the debited
--                    user's balance right after it (null when a system account paid);
--   replayed         the key was used before with the same hash, by an earlier transaction or
--                    earlier in this batch: that transfer's id, debit balance and time;
--   conflict         the key was used before with another hash;
--   insufficient     the debited user's balance (as the batch left it so far) is below amount,
--                    or the user has no account;
--   unknown_asset    the asset is not in `assets`;
--   duplicate_event  carried_event_id was carried by another transfer already (journaled, or
--                    committed earlier in this batch): an event is carried once.
--
-- Invariants
--   - Requests apply in order and each sees the balances the earlier ones left: a later one
--     may spend what an earlier one credited, and a refused one spent nothing.
--   - A refusal changes nothing and never fails its neighbours: every refusal is decided
--     here, before anything is written.
--   - User balances never go below zero (also the user_balance_not_negative constraint);
--     system shards may.
--   - Each idempotency key commits once (transfers_idempotency_key, unique); each carried event
--     once (transfers_carried_event, unique).
--   - Every committed transfer writes its journal row, its balances and its outbox rows in the
--     caller's transaction; a refused one writes none of them.
--   - Lock order, the one every transaction that moves money takes:
--       1. advisory locks on the batch's idempotency keys and carried event ids, sorted by hash
--          (concurrent copies of a request, or of an event, queue here and then see the
--          first one's journal row);
--       2. rows of accounts credited for the first time (and system shards) are inserted,
--          sorted by (owner, asset, shard);
--       3. every account row the batch touches is locked, sorted by (owner, asset, shard), one
--          primary-key lookup each: a join against accounts or transfers can turn into a scan
--          per row when the table grew since its statistics (migration 0005's lesson), so the
--          tables are only read by key or by `= any(array)`.
--   - A batch touches one shard of each system account, picked at random per batch.
--
-- Refusals are outcomes, never errors. An error (a broken constraint: a programmer error, such
-- as a zero amount or debit = credit, which the wallet validates before) fails the whole batch.
create or replace function post_transfers(p_batch jsonb, p_system_shards int)
returns setof transfer_outcome
language plpgsql
set search_path from current
-- Every statement here looks rows up by key. A plan made while a table was small is kept by the
-- session (PL/pgSQL caches it, and nothing invalidates it until the table is analyzed): the
-- lookups of keys and carried events in `transfers` were planned as sequential scans on a new
-- wallet and stayed so while it grew, reading every transfer on every batch (decision 0053).
set enable_seqscan to off
as $$
declare
  -- The batch in request order: v_requests[i] is the i-th request.
  v_requests transfer_request[] := array(select jsonb_populate_recordset(null::transfer_request, p_batch));
  -- What became of each request, same positions.
  v_outcomes transfer_outcome[] := '{}';
  -- The account rows the batch touches, in lock order, with their balances as the batch moves
  -- them (null: a user with no account, who has nothing to spend).
  v_accounts account_balance[];
  -- Where each of those accounts is in v_accounts, by 'owner asset' (an asset code has no
  -- spaces): a lookup per request, where a join of the two arrays could cost one comparison
  -- per pair.
  v_account_slot jsonb;
  -- Transfers of earlier transactions under this batch's keys, and the events they carried.
  v_journaled transfers[];
  v_carried uuid[];
  -- Inside the batch: which request committed under a key, and which carried an event, indexed
  -- by the position of the first request with that key or event.
  v_key_committed_by int[] := '{}';
  v_event_carried_by int[] := '{}';
  v_balance bigint;
  v_earlier transfer_outcome;
  r record;
begin
  if cardinality(v_requests) = 0 then
    return;
  end if;

  -- (1) Advisory locks, sorted.
  perform pg_advisory_xact_lock(l.hash)
  from (select distinct hashtextextended(k.name, 0) as hash
        from unnest(v_requests) q, lateral (values (q.key), ('carried-event:' || q.carried_event_id)) k(name)
        where k.name is not null
        order by 1) l;

  v_journaled := array(
    select t from transfers t
    where t.idempotency_key = any(array(select q.key from unnest(v_requests) q)));
  v_carried := array(
    select t.carried_event_id from transfers t
    where t.carried_event_id = any(array(select q.carried_event_id from unnest(v_requests) q)));

  -- Every account of a known asset the batch names, with the shard this batch uses.
  v_accounts := array(
    select (a.owner, a.asset,
            case when a.owner like 'system:%' then floor(random() * p_system_shards) else 0 end,
            null)::account_balance
    from (select distinct o.owner, q.asset
          from unnest(v_requests) q, lateral (values (q.debit), (q.credit)) o(owner)
          where q.asset in (select code from assets)) a
    order by a.owner, a.asset);
  v_account_slot := (select jsonb_object_agg(a.owner || ' ' || a.asset, a.ordinality)
                     from unnest(v_accounts) with ordinality a);

  -- (2) Rows that do not exist yet: system shards and credited users (never a debited user's:
  -- a refusal creates nothing), inserted sorted.
  insert into accounts (owner, asset, shard, balance)
  select a.owner, a.asset, a.shard, 0
  from unnest(v_accounts) a
  where a.owner like 'system:%' or (a.owner, a.asset) in (select q.credit, q.asset from unnest(v_requests) q)
  order by a.owner, a.asset, a.shard
  on conflict (owner, asset, shard) do nothing;

  -- (3) Every row the batch touches, locked in order, one primary-key lookup each.
  for i in 1 .. cardinality(v_accounts) loop
    select a.balance into v_balance from accounts a
    where a.owner = v_accounts[i].owner and a.asset = v_accounts[i].asset and a.shard = v_accounts[i].shard
    for update;
    v_accounts[i].balance := v_balance;
  end loop;

  -- Each request in order, against the balances and keys the earlier ones left.
  for r in
    select q.ordinality::int as n, q.id, q.debit, q.amount, q.hash, q.created_at, q.carried_event_id,
           min(q.ordinality) over (partition by q.key)::int as key_slot,
           case when q.carried_event_id is not null
                then min(q.ordinality) over (partition by q.carried_event_id)::int end as event_slot,
           j.id as journaled_id, j.request_hash = decode(q.hash, 'hex') as journaled_same,
           j.debit_balance as journaled_balance, j.created_at as journaled_at,
           q.carried_event_id = any(v_carried) as event_journaled,
           (v_account_slot ->> (q.debit || ' ' || q.asset))::int as debit_slot,
           (v_account_slot ->> (q.credit || ' ' || q.asset))::int as credit_slot
    from unnest(v_requests) with ordinality q
    left join unnest(v_journaled) j on j.idempotency_key = q.key
    order by q.ordinality
  loop
    if r.journaled_id is not null then
      v_outcomes[r.n] := case when r.journaled_same
        then (r.n, 'replayed', r.journaled_id, r.journaled_balance, r.journaled_at)::transfer_outcome
        else (r.n, 'conflict', null, null, null)::transfer_outcome end;
    elsif v_key_committed_by[r.key_slot] is not null then
      v_earlier := v_outcomes[v_key_committed_by[r.key_slot]];
      v_outcomes[r.n] := case when v_requests[v_earlier.idx].hash = r.hash
        then (r.n, 'replayed', v_earlier.transfer_id, v_earlier.debit_balance, v_earlier.created_at)::transfer_outcome
        else (r.n, 'conflict', null, null, null)::transfer_outcome end;
    elsif r.debit_slot is null then
      -- v_accounts lists the accounts of known assets only.
      v_outcomes[r.n] := (r.n, 'unknown_asset', null, null, null)::transfer_outcome;
    elsif r.event_journaled or v_event_carried_by[r.event_slot] is not null then
      v_outcomes[r.n] := (r.n, 'duplicate_event', null, null, null)::transfer_outcome;
    elsif r.debit like 'user:%' and coalesce(v_accounts[r.debit_slot].balance, 0) < r.amount then
      v_outcomes[r.n] := (r.n, 'insufficient', null, null, null)::transfer_outcome;
    else
      v_accounts[r.debit_slot].balance := v_accounts[r.debit_slot].balance - r.amount;
      v_accounts[r.credit_slot].balance := v_accounts[r.credit_slot].balance + r.amount;
      v_outcomes[r.n] := (r.n, 'committed', r.id,
                          case when r.debit like 'user:%' then v_accounts[r.debit_slot].balance end,
                          r.created_at)::transfer_outcome;
      v_key_committed_by[r.key_slot] := r.n;
      if r.event_slot is not null then
        v_event_carried_by[r.event_slot] := r.n;
      end if;
    end if;
  end loop;
  if cardinality(v_outcomes) <> cardinality(v_requests) then
    raise exception 'post_transfers answered % of % requests', cardinality(v_outcomes), cardinality(v_requests);
  end if;

  -- The rows are locked, so each still holds its balance from before the batch.
  update accounts a set balance = x.balance, updated_at = now()
  from unnest(v_accounts) x
  where a.owner = x.owner and a.asset = x.asset and a.shard = x.shard and a.balance <> x.balance;

  insert into transfers (id, debit_owner, credit_owner, asset, amount, kind, reference, metadata, hold_id,
                         debit_balance, idempotency_key, request_hash, created_at, carried_event_id, requested_by)
  select q.id, q.debit, q.credit, q.asset, q.amount, q.kind, coalesce(q.reference, ''), coalesce(q.metadata, '{}'),
         q.hold_id, o.debit_balance, q.key, decode(q.hash, 'hex'), q.created_at, q.carried_event_id,
         coalesce(q.requested_by, '')
  from unnest(v_requests) with ordinality q
  join unnest(v_outcomes) o on o.idx = q.ordinality
  where o.outcome = 'committed';

  -- Events in request order: the outbox's order is the order they are published in.
  perform outbox_enqueue(coalesce(jsonb_agg(e.event order by q.ordinality, e.ordinality), '[]'))
  from unnest(v_requests) with ordinality q
  join unnest(v_outcomes) o on o.idx = q.ordinality
  cross join lateral jsonb_array_elements(coalesce(q.events, '[]')) with ordinality e(event, ordinality)
  where o.outcome = 'committed';

  return query select * from unnest(v_outcomes);
end
$$;
