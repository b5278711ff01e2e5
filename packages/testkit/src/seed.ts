// Funded users for benchmarks and load tests, written straight into the wallet's tables in SQL
// (no service's code): one MINT transfer from system:mint per user, the user's account and the
// mint's negative side, so the ledger stays consistent and `ledger audit` passes (every asset
// sums to zero, every balance matches its journal; a MINT needs no fact behind it, unlike a
// PURCHASE, REFUND or PROMOTION) without thousands of Mint RPCs. The wallet must have started
// on the database first: its migrations made the tables.

/** Anything that runs one SQL text: a pg.Client or pool, or `{ query: (sql) => em.execute(sql) }`. */
export interface SqlRunner {
  query(sql: string): Promise<unknown>;
}

export interface SeedOptions {
  /** The wallet's schema; "wallet" unless a test moved it. */
  schema?: string;
  /** The asset to mint; "COIN" by default. */
  asset?: string;
}

/** Owner ids the wallet accepts (its accounts' check constraint), so nothing here needs quoting. */
const ownerPattern = /^[A-Za-z0-9_.@-]{1,64}$/;
const codePattern = /^[A-Z][A-Z0-9]{1,15}$/;
const schemaPattern = /^[a-z_][a-z0-9_]{0,62}$/;
/** ovation.wallet.v1.TransferKind.MINT: new money, the one kind that rests on no other fact. */
const mintKind = 1;

/**
 * Gives users `<prefix>1` … `<prefix><count>` `amount` each of the asset, minted from
 * system:mint, in one statement list (one implicit transaction). The users must not have a
 * wallet account yet, and a prefix is seeded once: the transfers' idempotency keys are
 * `bench-seed-<prefix><i>`.
 */
export async function seedFundedUsers(
  db: SqlRunner,
  prefix: string,
  count: number,
  amount: bigint,
  options: SeedOptions = {},
): Promise<void> {
  const schema = options.schema ?? "wallet";
  const asset = options.asset ?? "COIN";
  if (!ownerPattern.test(`${prefix}${count}`))
    throw new Error(`seed prefix ${prefix} makes invalid user ids`);
  if (!codePattern.test(asset)) throw new Error(`invalid asset ${asset}`);
  if (!schemaPattern.test(schema)) throw new Error(`invalid schema ${schema}`);
  if (!Number.isSafeInteger(count) || count < 1) throw new Error(`invalid count ${count}`);
  if (amount <= 0n) throw new Error(`invalid amount ${amount}`);
  const mintTotal = -BigInt(count) * amount;
  await db.query(`
    insert into ${schema}.assets (code) values ('${asset}') on conflict do nothing;
    insert into ${schema}.transfers (id, debit_owner, credit_owner, asset, amount, kind, reference,
                                     debit_balance, idempotency_key, request_hash, created_at, requested_by)
    select gen_random_uuid(), 'system:mint', 'user:${prefix}' || i, '${asset}', ${amount}, ${mintKind}, 'bench seed',
           null, 'bench-seed-${prefix}' || i, '\\x00', now(), 'bench-seed'
    from generate_series(1, ${count}) i;
    insert into ${schema}.accounts (owner, asset, shard, balance)
    select 'user:${prefix}' || i, '${asset}', 0, ${amount} from generate_series(1, ${count}) i;
    insert into ${schema}.accounts (owner, asset, shard, balance)
    values ('system:mint', '${asset}', 0, ${mintTotal})
    on conflict (owner, asset, shard) do update set balance = ${schema}.accounts.balance + excluded.balance;`);
}
