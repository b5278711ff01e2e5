// Operator view of an outbox: rows JetStream refused, with their attempts and last error, and
// a way to send one again now instead of after its backoff. A row is never dropped by the
// relay; once its cause is fixed (a stream created, a limit raised) it goes out on its own.
import type pg from "pg";

export interface OutboxRowState {
  id: string;
  eventId: string;
  subject: string;
  type: string;
  attempts: number;
  lastError: string;
  nextAttempt: Date;
  createdAt: Date;
}

const listLimitMax = 100;

export class OutboxAdmin {
  readonly #pool: pg.Pool;
  readonly #table: string;

  constructor(pool: pg.Pool, schema: string) {
    if (!/^[a-z][a-z0-9_]{0,62}$/.test(schema)) throw new Error(`invalid schema name ${schema}`);
    this.#pool = pool;
    this.#table = `"${schema}".outbox`;
  }

  /** Rows that failed at least once, oldest first. */
  async failing(limit = listLimitMax): Promise<OutboxRowState[]> {
    const { rows } = await this.#pool.query<{
      id: string;
      event_id: string;
      subject: string;
      type: string;
      attempts: number;
      last_error: string | null;
      available_at: Date | string;
      created_at: Date | string;
    }>(
      `select id, event_id, subject, type, attempts, last_error, available_at, created_at
       from ${this.#table} where attempts > 0 order by id limit $1`,
      [Math.min(Math.max(limit, 1), listLimitMax)],
    );
    return rows.map((row) => ({
      id: row.id,
      eventId: row.event_id,
      subject: row.subject,
      type: row.type,
      attempts: row.attempts,
      lastError: row.last_error ?? "",
      // MikroORM's pool hands timestamps over as text.
      nextAttempt: new Date(row.available_at),
      createdAt: new Date(row.created_at),
    }));
  }

  /** Makes a row due now; false when there is no such row (it was published meanwhile). */
  async retryNow(id: string): Promise<boolean> {
    if (!/^[1-9][0-9]{0,18}$/.test(id)) return false;
    const { rowCount } = await this.#pool.query(
      `update ${this.#table} set available_at = now() where id = $1`,
      [id],
    );
    return rowCount === 1;
  }
}
