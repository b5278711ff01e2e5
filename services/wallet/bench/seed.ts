// Funded users for benchmarks, seeded straight into the ledger as one mint transfer each, so
// the ledger stays consistent (`ledger audit` passes) without thousands of Mint RPCs.
import type pg from "pg";

/** Gives users `<prefix>1` … `<prefix><count>` `amount` COIN each, minted from system:mint. */
export async function seedFundedUsers(
  db: pg.Client,
  prefix: string,
  count: number,
  amount: bigint,
): Promise<void> {
  await db.query(`
    insert into wallet.transfers (id, debit_owner, credit_owner, asset, amount, kind, reference,
                                  debit_balance, idempotency_key, request_hash, created_at)
    select gen_random_uuid(), 'system:mint', 'user:${prefix}' || i, 'COIN', ${amount}, 1, 'bench seed', 0,
           'bench-seed-${prefix}' || i, '\\x00', now()
    from generate_series(1, ${count}) i;
    insert into wallet.accounts (owner, asset, shard, balance)
    select 'user:${prefix}' || i, 'COIN', 0, ${amount} from generate_series(1, ${count}) i;
    insert into wallet.accounts (owner, asset, shard, balance)
    values ('system:mint', 'COIN', 0, ${-BigInt(count) * amount})
    on conflict (owner, asset, shard) do update set balance = wallet.accounts.balance + excluded.balance;`);
}
