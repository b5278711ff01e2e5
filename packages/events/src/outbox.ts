// Transactional outbox: a state change and the event that announces it commit in one database
// transaction; the relay publishes committed events to JetStream with the event id as
// Nats-Msg-Id, so a relay that crashes after publishing and publishes again is deduplicated.
import { randomUUID } from "node:crypto";
import { type DescMessage, type MessageShape, toBinary } from "@bufbuild/protobuf";
import { headers as natsHeaders } from "@nats-io/nats-core";
import type { EntityManager } from "@ovation/db";
import { outboxPublished, traceHeaders } from "@ovation/server";
import pg from "pg";
import type { Logger } from "pino";
import type { EventBus } from "./bus.ts";
import { headerNames } from "./names.ts";

export interface OutboxEvent {
  eventId: string;
  /** Subject without the deployment prefix, "<domain>.<entity>.<verb>". */
  subject: string;
  /** Protobuf type name of the payload. */
  type: string;
  payload: Uint8Array;
  /** Extra message headers; the current trace context is added on enqueue. */
  headers?: Record<string, string>;
}

/** The headers an event is stored with: the current trace context, then its own. */
export const outboxHeaders = (event: OutboxEvent): Record<string, string> => ({
  ...traceHeaders(),
  ...event.headers,
});

/** Builds an outbox event from a protobuf message. */
export function eventOf<Desc extends DescMessage>(
  schema: Desc,
  message: MessageShape<Desc>,
  subject: string,
  eventId: string = randomUUID(),
): OutboxEvent {
  return { eventId, subject, type: schema.typeName, payload: toBinary(schema, message) };
}

/** Adds events to the outbox inside the caller's transaction. */
export async function enqueueEvents(em: EntityManager, events: readonly OutboxEvent[]): Promise<void> {
  if (events.length === 0) return;
  // One statement for the whole batch. Rows travel as JSON: MikroORM expands array parameters
  // into lists, so a Postgres array cannot be bound directly.
  const rows = await em.execute<{ id: string }[]>(
    `insert into outbox (event_id, subject, type, payload, headers)
     select event_id, subject, type, decode(payload, 'base64'), headers
     from jsonb_to_recordset(?::jsonb) as e(event_id uuid, subject text, type text, payload text, headers jsonb)
     returning id`,
    [
      JSON.stringify(
        events.map((e) => ({
          event_id: e.eventId,
          subject: e.subject,
          type: e.type,
          payload: Buffer.from(e.payload).toString("base64"),
          headers: outboxHeaders(e),
        })),
      ),
    ],
  );
  await em.execute("select outbox_wake(?)", [rows[0]!.id]);
}

export interface OutboxRelayOptions {
  pool: pg.Pool;
  /** Connection string for the LISTEN connection (a pooled client cannot hold LISTEN). */
  databaseUrl: string;
  schema: string;
  bus: EventBus;
  logger: Logger;
  batchMax?: number;
  pollIntervalMs?: number;
}

const relayBatchMax = 500;
/**
 * NOTIFY is skipped while older rows wait (tables.ts), and a row committed while a drain is in
 * flight sees that drain's rows: polling bounds the delay of those. An idle poll is one index
 * probe of an empty table, so a short interval costs little and keeps alerts prompt.
 */
const relayPollIntervalMs = 100;
/**
 * Pause after a partial batch: rows committed during the drain sent no NOTIFY, so look again
 * soon, but not at once: under load a spinning relay publishes batches of a few rows and takes
 * the CPU and connections the transactions need (10 ms cost a quarter of `pnpm bench wallet`'s
 * rate on two cores). 50 ms lets a batch gather and bounds the publish delay under load.
 */
const relayGatherMs = 50;
const relayErrorBackoffMs = 1_000;

interface OutboxRow {
  id: string;
  event_id: string;
  subject: string;
  type: string;
  payload: Buffer;
  headers: Record<string, string>;
}

/**
 * Publishes committed outbox rows. Several replicas may run it: each batch is claimed with
 * FOR UPDATE SKIP LOCKED and deleted in the same transaction after JetStream acknowledged it.
 */
export class OutboxRelay {
  readonly #options: Required<OutboxRelayOptions>;
  #running = false;
  #loop: Promise<void> | undefined;
  #wake: (() => void) | undefined;
  /** A NOTIFY arrived since the last drain began: the next sleep must not wait. */
  #notified = false;
  #listener: pg.Client | undefined;
  /** Events published since start; for metrics and tests. */
  published = 0;

  constructor(options: OutboxRelayOptions) {
    this.#options = { batchMax: relayBatchMax, pollIntervalMs: relayPollIntervalMs, ...options };
  }

  async start(): Promise<void> {
    this.#running = true;
    await this.#listen();
    this.#loop = this.#run();
  }

  async stop(): Promise<void> {
    this.#running = false;
    this.#wake?.();
    await this.#loop;
    await this.#listener?.end().catch(() => {});
  }

  /** Publishes one batch; returns how many events it published. */
  async drainOnce(): Promise<number> {
    const client = await this.#options.pool.connect();
    try {
      await client.query("begin");
      const { rows } = await client.query<OutboxRow>(
        `select id, event_id, subject, type, payload, headers from "${this.#options.schema}".outbox
         order by id limit $1 for update skip locked`,
        [this.#options.batchMax],
      );
      if (rows.length > 0) {
        await Promise.all(rows.map((row) => this.#publish(row)));
        await client.query(`delete from "${this.#options.schema}".outbox where id = any($1::bigint[])`, [
          rows.map((row) => row.id),
        ]);
      }
      await client.query("commit");
      this.published += rows.length;
      if (rows.length > 0) outboxPublished.inc({ service: this.#options.schema }, rows.length);
      return rows.length;
    } catch (error) {
      await client.query("rollback").catch(() => {});
      throw error;
    } finally {
      client.release();
    }
  }

  async #publish(row: OutboxRow): Promise<void> {
    const { bus } = this.#options;
    const headers = natsHeaders();
    for (const [key, value] of Object.entries(row.headers)) headers.set(key, value);
    headers.set(headerNames.eventId, row.event_id);
    headers.set(headerNames.eventType, row.type);
    await bus.js.publish(bus.names.subject(row.subject), row.payload, { msgID: row.event_id, headers });
  }

  async #run(): Promise<void> {
    while (this.#running) {
      let published = 0;
      this.#notified = false;
      try {
        published = await this.drainOnce();
      } catch (error) {
        this.#options.logger.warn({ err: error }, "outbox relay failed, retrying");
        await this.#sleep(relayErrorBackoffMs);
        continue;
      }
      if (published === 0) await this.#sleep(this.#options.pollIntervalMs);
      else if (published < this.#options.batchMax) await this.#sleep(relayGatherMs, false);
    }
  }

  /** Sleeps `ms`; unless told otherwise a NOTIFY or stop() ends the sleep early. */
  #sleep(ms: number, wakeOnNotify = true): Promise<void> {
    // A NOTIFY during the drain may be for a row the drain's snapshot did not see.
    if (wakeOnNotify && this.#notified && this.#running) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.#wake = wakeOnNotify ? done : undefined;
    });
  }

  async #listen(): Promise<void> {
    const client = new pg.Client({ connectionString: this.#options.databaseUrl });
    client.on("notification", () => {
      this.#notified = true;
      this.#wake?.();
    });
    client.on("error", (error) =>
      this.#options.logger.warn({ err: error }, "outbox LISTEN connection lost; polling"),
    );
    await client.connect();
    await client.query(`listen "${this.#options.schema}_outbox"`);
    this.#listener = client;
  }
}
