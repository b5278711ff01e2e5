// The unbatched ceiling for `pnpm bench wallet`: the wallet's original single-transfer SQL
// function (post_transfer, before group commit), one transfer per call and per transaction,
// tuned for exactly that. Created in the benchmark's own throwaway database only, next to the
// real schema, so batching is compared with the best that one transaction per transfer did.
export const unbatchedFunctionsSql = `
create function wallet.bench_add_to_system_account(p_owner text, p_asset text, p_delta bigint, p_shards int)
returns bigint language plpgsql set search_path = wallet as $$
declare
  v_shard int := floor(random() * p_shards)::int;
  v_balance bigint;
begin
  update accounts set balance = balance + p_delta, updated_at = now()
  where owner = p_owner and asset = p_asset and shard = v_shard
  returning balance into v_balance;
  if not found then
    insert into accounts as a (owner, asset, shard, balance) values (p_owner, p_asset, v_shard, p_delta)
    on conflict (owner, asset, shard) do update set balance = a.balance + p_delta, updated_at = now()
    returning a.balance into v_balance;
  end if;
  return v_balance;
end
$$;

create function wallet.bench_post_transfer(
  p_id uuid, p_debit text, p_credit text, p_asset text, p_amount bigint, p_kind smallint,
  p_idempotency_key text, p_request_hash bytea, p_events jsonb, p_system_shards int)
returns bigint language plpgsql set search_path = wallet as $$
declare
  v_existing transfers%rowtype;
  v_balance bigint;
begin
  perform pg_advisory_xact_lock(hashtextextended(p_idempotency_key, 0));
  select * into v_existing from transfers t where t.idempotency_key = p_idempotency_key;
  if found then
    return v_existing.debit_balance;
  end if;
  update accounts a set balance = a.balance - p_amount, updated_at = now()
  where a.owner = p_debit and a.asset = p_asset and a.shard = 0 and a.balance >= p_amount
  returning a.balance into v_balance;
  if not found then
    raise exception using errcode = 'OV001', message = 'insufficient funds';
  end if;
  perform bench_add_to_system_account(p_credit, p_asset, p_amount, p_system_shards);
  insert into transfers (id, debit_owner, credit_owner, asset, amount, kind, reference, metadata,
                         hold_id, debit_balance, idempotency_key, request_hash, created_at)
  values (p_id, p_debit, p_credit, p_asset, p_amount, p_kind, '', '{}', null, v_balance,
          p_idempotency_key, p_request_hash, now());
  perform outbox_enqueue(p_events);
  return v_balance;
end
$$;
`;
