// Wallet persistence. Every write of money goes through the SQL function post_transfer in one
// round trip; reads use MikroORM entities. Database errors become LedgerErrors here.
import { LockMode } from "@mikro-orm/core";
import { type Database, type EntityManager, nativePool, sqlStateOf } from "@ovation/db";
import { type OutboxEvent, outboxHeaders } from "@ovation/events";
import type pg from "pg";
import { LedgerError, ledgerErrorCodes } from "../domain/errors.ts";
import type { TransferFields } from "../domain/ledger.ts";
import { Account, Hold, Transfer } from "./entities.ts";

export interface PostTransferInput extends TransferFields {
  id: string;
  idempotencyKey: string;
  fingerprint: Buffer;
  createdAt: Date;
  events: readonly OutboxEvent[];
}

export interface PostedTransfer {
  id: string;
  debitBalance: bigint;
  createdAt: Date;
  replayed: boolean;
}

/** SQLSTATEs raised by post_transfer and by constraints it relies on. */
const sqlStates = {
  insufficientFunds: "OV001",
  idempotencyConflict: "OV002",
  foreignKeyViolation: "23503",
  uniqueViolation: "23505",
} as const;

const duplicateRetriesMax = 2;

type PostTransferRow = {
  transfer_id: string;
  debit_balance: string;
  created_at: Date | string;
  replayed: boolean;
};

const postTransferSql = `select * from post_transfer($1::uuid, $2::text, $3::text, $4::text, $5::bigint, $6::smallint,
  $7::text, $8::jsonb, $9::uuid, $10::text, decode($11, 'hex'), $12::timestamptz, $13::jsonb, $14::int)`;

function postTransferValues(input: PostTransferInput, systemShards: number): unknown[] {
  return [
    input.id,
    input.debitOwner,
    input.creditOwner,
    input.asset,
    input.amount.toString(),
    input.kind,
    input.reference,
    JSON.stringify(input.metadata),
    input.holdId ?? null,
    input.idempotencyKey,
    input.fingerprint.toString("hex"),
    input.createdAt.toISOString(),
    JSON.stringify(
      input.events.map((e) => ({
        event_id: e.eventId,
        subject: e.subject,
        type: e.type,
        payload: Buffer.from(e.payload).toString("base64"),
        headers: outboxHeaders(e),
      })),
    ),
    systemShards,
  ];
}

export class LedgerStore {
  readonly #orm: Database;
  readonly #systemShards: number;
  #nativePool: Promise<pg.Pool> | undefined;

  constructor(orm: Database, systemShards: number) {
    this.#orm = orm;
    this.#systemShards = systemShards;
  }

  fork(): EntityManager {
    return this.#orm.em.fork();
  }

  async ensureAssets(codes: readonly string[]): Promise<void> {
    await this.fork().execute(
      "insert into assets (code) select value from jsonb_array_elements_text(?::jsonb) on conflict do nothing",
      [JSON.stringify(codes)],
    );
  }

  /**
   * Posts one transfer. `em` may be inside a larger transaction (holds); without one the call is
   * its own transaction. A concurrent request with the same key loses on the unique index and
   * is retried, which then finds and returns the first result.
   */
  async postTransfer(input: PostTransferInput, em?: EntityManager): Promise<PostedTransfer> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.#post(em, input);
      } catch (error) {
        // The advisory lock queues copies of one request; a unique violation can still come
        // from a copy that raced it on another key hash, and one retry then finds the result.
        const retry = sqlStateOf(error) === sqlStates.uniqueViolation && em === undefined;
        if (retry && attempt < duplicateRetriesMax) continue;
        throw toLedgerError(error);
      }
    }
  }

  async #post(em: EntityManager | undefined, input: PostTransferInput): Promise<PostedTransfer> {
    const values = postTransferValues(input, this.#systemShards);
    // Outside a transaction the transfer is one prepared statement on the pg pool: no ORM layer
    // on the hottest path. Inside one (holds) it runs on the transaction's connection.
    const rows: PostTransferRow[] =
      em === undefined
        ? (
            await (
              await this.#pool()
            ).query<PostTransferRow>({ name: "post_transfer", text: postTransferSql, values })
          ).rows
        : await em.execute<PostTransferRow[]>(postTransferSql.replace(/\$\d+/g, "?"), values);
    const row = rows[0]!;
    return {
      id: row.transfer_id,
      debitBalance: BigInt(row.debit_balance),
      createdAt: new Date(row.created_at),
      replayed: row.replayed,
    };
  }

  #pool(): Promise<pg.Pool> {
    this.#nativePool ??= nativePool(this.#orm);
    return this.#nativePool;
  }

  async transfer(id: string) {
    return this.fork().findOneOrFail(Transfer, { id });
  }

  /** Balance per asset of one owner (the sum of its shard rows). */
  async balances(owner: string): Promise<{ asset: string; amount: bigint }[]> {
    const rows = await this.fork().execute<{ asset: string; amount: string }[]>(
      "select asset, sum(balance)::bigint as amount from accounts where owner = ? group by asset order by asset",
      [owner],
    );
    return rows.map((row) => ({ asset: row.asset, amount: BigInt(row.amount) }));
  }

  /** Transfers touching `owner`, newest first, strictly before `beforeId` when given. */
  async listTransfers(owner: string, asset: string, limit: number, beforeId: string | undefined) {
    return this.fork().find(
      Transfer,
      {
        $or: [{ debitOwner: owner }, { creditOwner: owner }],
        ...(asset === "" ? {} : { asset }),
        ...(beforeId === undefined ? {} : { id: { $lt: beforeId } }),
      },
      { orderBy: { id: "desc" }, limit },
    );
  }

  async holdByKey(em: EntityManager, idempotencyKey: string) {
    return em.findOne(Hold, { idempotencyKey });
  }

  /** The hold, row-locked until the transaction ends. */
  async lockHold(em: EntityManager, id: string) {
    const hold = await em.findOne(Hold, { id }, { lockMode: LockMode.PESSIMISTIC_WRITE });
    if (hold === null) throw new LedgerError(ledgerErrorCodes.holdNotFound, `no hold ${id}`);
    return hold;
  }

  /** Ids of expired pending holds, locked and skipped by other replicas. */
  async lockExpiredHolds(em: EntityManager, limit: number): Promise<string[]> {
    const rows = await em.execute<{ id: string }[]>(
      `select id from holds where status = 1 and expires_at <= now()
       order by expires_at limit ? for update skip locked`,
      [limit],
    );
    return rows.map((row) => row.id);
  }

  /** Facts `ledger audit` checks; see app/audit.ts. */
  async auditFacts() {
    const em = this.fork();
    const sums = await em.execute<{ asset: string; total: string; accounts: string }[]>(
      "select asset, sum(balance)::text as total, count(distinct owner)::text as accounts from accounts group by asset order by asset",
    );
    const negativeUsers = await em.execute<{ owner: string; asset: string; balance: string }[]>(
      "select owner, asset, balance::text from accounts where not is_system and balance < 0 limit 100",
    );
    const journalMismatches = await em.execute<
      { owner: string; asset: string; balance: string; journal: string }[]
    >(
      `with journal as (
         select owner, asset, sum(delta) as amount from (
           select debit_owner as owner, asset, -amount as delta from transfers
           union all
           select credit_owner, asset, amount from transfers) moves
         group by owner, asset),
       balances as (select owner, asset, sum(balance) as amount from accounts group by owner, asset)
       select coalesce(b.owner, j.owner) as owner, coalesce(b.asset, j.asset) as asset,
              coalesce(b.amount, 0)::text as balance, coalesce(j.amount, 0)::text as journal
       from balances b full join journal j on b.owner = j.owner and b.asset = j.asset
       where coalesce(b.amount, 0) <> coalesce(j.amount, 0)
       limit 100`,
    );
    return { sums, negativeUsers, journalMismatches };
  }
}

function toLedgerError(error: unknown): unknown {
  switch (sqlStateOf(error)) {
    case sqlStates.insufficientFunds:
      return new LedgerError(ledgerErrorCodes.insufficientFunds, "insufficient funds");
    case sqlStates.idempotencyConflict:
      return new LedgerError(
        ledgerErrorCodes.idempotencyConflict,
        "idempotency key reused with a different request",
      );
    case sqlStates.foreignKeyViolation:
      return new LedgerError(ledgerErrorCodes.unknownAsset, "unknown asset");
    default:
      return error;
  }
}

export { Account, Hold, Transfer };
