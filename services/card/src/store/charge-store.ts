// Charges and their refunds, plain SQL in the card schema.
import type { Database, EntityManager } from "@ovation/db";
import type { ChargeRepository, ChargeRow } from "../app/ports.ts";

type Row = Record<string, unknown>;

function chargeRow(row: Row): ChargeRow {
  return {
    id: row.id as string,
    merchant: row.merchant as string,
    idempotencyKey: row.idempotency_key as string,
    requestHash: row.request_hash as Buffer,
    reference: row.reference as string,
    customerId: row.customer_id as string,
    asset: row.asset as string,
    amount: BigInt(row.amount as string),
    succeeded: row.succeeded as boolean,
    result: new Uint8Array(row.result as Buffer),
    signature: new Uint8Array(row.signature as Buffer),
    keyId: row.key_id as string,
    refund:
      row.refund_id === null
        ? null
        : {
            id: row.refund_id as string,
            key: row.refund_key as string,
            amount: BigInt(row.refund_amount as string),
          },
  };
}

const columns = `id, merchant, idempotency_key, request_hash, reference, customer_id, asset, amount::text,
  succeeded, result, signature, key_id, refund_id, refund_key, refund_amount::text`;

export class ChargeStore implements ChargeRepository {
  readonly #orm: Database;

  constructor(orm: Database) {
    this.#orm = orm;
  }

  fork(): EntityManager {
    return this.#orm.em.fork();
  }

  async byKey(merchant: string, idempotencyKey: string, em = this.fork()): Promise<ChargeRow | null> {
    const rows = await em.execute<Row[]>(
      `select ${columns} from charges where merchant = ? and idempotency_key = ?`,
      [merchant, idempotencyKey],
    );
    return rows.length === 0 ? null : chargeRow(rows[0]!);
  }

  /**
   * Inserts the charge unless its key was taken meanwhile; returns the row that holds the key.
   * One round trip: the insert answers with its row, or the statement with the row that was
   * there before it began. Only a duplicate that committed while the insert waited for it is
   * read again.
   */
  async insert(charge: Omit<ChargeRow, "refund">): Promise<ChargeRow> {
    const em = this.fork();
    const rows = await em.execute<Row[]>(
      `with inserted as (
         insert into charges (id, merchant, idempotency_key, request_hash, reference, customer_id, asset, amount,
           succeeded, result, signature, key_id)
         values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) on conflict (merchant, idempotency_key) do nothing
         returning ${columns})
       select * from inserted
       union all
       select ${columns} from charges where merchant = ? and idempotency_key = ? and not exists (select 1 from inserted)`,
      [
        charge.id,
        charge.merchant,
        charge.idempotencyKey,
        charge.requestHash,
        charge.reference,
        charge.customerId,
        charge.asset,
        charge.amount.toString(),
        charge.succeeded,
        Buffer.from(charge.result),
        Buffer.from(charge.signature),
        charge.keyId,
        charge.merchant,
        charge.idempotencyKey,
      ],
    );
    if (rows[0] !== undefined) return chargeRow(rows[0]);
    return (await this.byKey(charge.merchant, charge.idempotencyKey, em))!;
  }

  async lock(em: EntityManager, merchant: string, chargeId: string): Promise<ChargeRow | null> {
    const rows = await em.execute<Row[]>(
      `select ${columns} from charges where id = ? and merchant = ? for update`,
      [chargeId, merchant],
    );
    return rows.length === 0 ? null : chargeRow(rows[0]!);
  }

  async recordRefund(
    em: EntityManager,
    chargeId: string,
    refund: { id: string; key: string; amount: bigint },
  ) {
    await em.execute(
      "update charges set refund_id = ?, refund_key = ?, refund_amount = ?, refunded_at = now() where id = ?",
      [refund.id, refund.key, refund.amount.toString(), chargeId],
    );
  }
}
