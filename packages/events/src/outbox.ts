// Transactional outbox: a state change and the event that announces it commit in one database
// transaction; the relay publishes committed events to JetStream with the event id as
// Nats-Msg-Id, so a relay that crashes after publishing and publishes again is deduplicated.
//
// The relay never holds a transaction open while it talks to NATS. It leases a batch of rows
// in one statement (their available_at moves into the future), publishes them, then deletes
// what JetStream acknowledged. A row JetStream refuses is pushed back with a growing delay, its
// attempts and last error recorded, while the other rows keep flowing; a NATS outage (also a
// stream electing a new leader after a node of a cluster was lost) pushes nothing back and costs
// no row an attempt. A row stays until JetStream acknowledged it: a publish whose answer was lost
// is simply made again, and the stream drops the copy by its Nats-Msg-Id (decision 0042).
import { randomUUID } from "node:crypto";
import { type DescMessage, type MessageShape, toBinary } from "@bufbuild/protobuf";
import { headers as natsHeaders, RequestError } from "@nats-io/nats-core";
import {
  type Database,
  type EntityManager,
  type EventSubscriber,
  type ListenSubscription,
  preparedStatementName,
  sharedListener,
} from "@ovation/db";
import { outboxFailures, outboxPublished, outboxStuckRows, traceHeaders } from "@ovation/server";
import type pg from "pg";
import type { Logger } from "pino";
import { type EventBus, isNatsOutage, isNotFound, jetStreamTimeoutMs } from "./bus.ts";
import { domainOfSubject, headerNames } from "./names.ts";

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

/** Events as the JSON array `outbox_enqueue` (tables.ts) takes. */
export function outboxRowsJson(events: readonly OutboxEvent[]): Record<string, unknown>[] {
  return events.map((e) => ({
    event_id: e.eventId,
    subject: e.subject,
    type: e.type,
    payload: Buffer.from(e.payload).toString("base64"),
    headers: outboxHeaders(e),
  }));
}

/** Adds events to the outbox inside the caller's transaction; its commit wakes the relays. */
export async function enqueueEvents(em: EntityManager, events: readonly OutboxEvent[]): Promise<void> {
  if (events.length === 0) return;
  // Rows travel as JSON: MikroORM expands array parameters into lists, so a Postgres array
  // cannot be bound directly.
  await em.execute("select outbox_enqueue(?::jsonb)", [JSON.stringify(outboxRowsJson(events))]);
  markOutboxWritten(em);
}

/**
 * Who wakes a relay (decision 0051). `outbox_enqueue` sends no NOTIFY: a NOTIFY holds a lock of
 * the whole database through its transaction's commit, so committing transactions that sent one
 * waited for each other's WAL flushes. The writer wakes the relays once it has committed: the
 * relays started on its own database handle in memory, at once; when that handle runs none (a
 * CLI, a second handle), or none of them can publish now (this replica has lost NATS), every
 * relay of the schema with a NOTIFY of its own, outside the transaction, so that a replica that
 * can publish takes the rows at once.
 *
 * Keyed by the handle's configuration, which its forks and their transactions share.
 */
const localRelays = new WeakMap<object, Set<LocalRelay>>();

/** A relay as the writers of its handle see it. */
interface LocalRelay {
  wake(): void;
  /** Whether it can publish now: its connection to NATS is up. */
  canPublish(): boolean;
}
/** Open transactions that added outbox rows: their commit wakes the relays. */
const writingTransactions = new WeakSet<object>();

/** The database handle (or one of its forks) a relay is woken by, or a writer writes through. */
interface Handle {
  getEventManager(): { registerSubscriber(subscriber: EventSubscriber): void };
  getConnection(): { execute(sql: string, params: unknown[]): Promise<unknown> };
  readonly config: { get(key: "schema"): string | undefined };
}

/**
 * Says that `em`'s transaction wrote outbox rows (through SQL of its own, such as the wallet's
 * post_transfers): its commit wakes the relays. Outside a transaction the write has committed
 * already, so they are woken now.
 */
export function markOutboxWritten(em: EntityManager): void {
  const transaction = em.getTransactionContext<object>();
  if (transaction === undefined) {
    outboxCommitted(em);
    return;
  }
  // A transaction's event manager is its own (a clone); registering twice changes nothing.
  em.getEventManager().registerSubscriber(wakeOnCommit);
  writingTransactions.add(transaction);
}

/** Wakes the relays: call it after committing outbox rows outside a MikroORM transaction. */
export function outboxCommitted(handle: Handle): void {
  let publishing = false;
  for (const relay of localRelays.get(handle.config) ?? []) {
    relay.wake();
    publishing ||= relay.canPublish();
  }
  if (publishing) return;
  // No relay of this handle can publish: tell the schema's relays in other processes. Should
  // the NOTIFY fail (the database just went away), their poll takes the rows within
  // pollIntervalMs.
  const channel = `${handle.config.get("schema")}_outbox`;
  handle
    .getConnection()
    .execute("select pg_notify(?, '')", [channel])
    .catch(() => {});
}

/** Wakes the relays when a MikroORM transaction that wrote outbox rows commits. */
const wakeOnCommit: EventSubscriber = {
  afterTransactionCommit({ em, transaction }) {
    if (transaction !== undefined && writingTransactions.delete(transaction)) outboxCommitted(em);
  },
};
export interface OutboxRelayOptions {
  pool: pg.Pool;
  /**
   * A direct connection string (never one through a transaction-mode pooler): the process's
   * shared LISTEN connection (`sharedListener`) hears the outbox's NOTIFY on it.
   */
  databaseUrl: string;
  schema: string;
  bus: EventBus;
  logger: Logger;
  /**
   * The database handle whose commits of outbox rows wake the relay in memory; writers through
   * any other handle wake it with a NOTIFY.
   */
  wokenBy?: Database;
  batchMax?: number;
  pollIntervalMs?: number;
}

export const relayLimits = {
  batchMax: 500,
  /**
   * The safety net: how often an idle relay looks without being woken. Commits in its own
   * process and NOTIFYs from others wake it at once; what is left (a lease that expired with a
   * dead relay, a writer with no relay whose NOTIFY was skipped) waits at most this long.
   */
  pollIntervalMs: 5_000,
  /** The poll while the LISTEN connection is down: NOTIFYs go to nobody then. */
  unlistenedPollIntervalMs: 100,
  /**
   * Pause after a partial batch: rows committed during the drain sent no NOTIFY, so look again
   * soon, but not at once: under load a spinning relay publishes batches of a few rows and
   * takes the CPU and connections the transactions need (10 ms cost a quarter of the wallet
   * benchmark's rate on two cores). 50 ms lets a batch gather and bounds the delay under load.
   */
  gatherMs: 50,
  /**
   * How long a leased row stays invisible to other relays. A relay that dies mid-batch leaves
   * its rows for this long; publishing them again is harmless (Nats-Msg-Id dedupe). It must
   * outlast the longest drain: a publish waits at most jetStreamTimeoutMs.
   */
  leaseMs: 10_000,
  /** First retry delay of a row JetStream refused; it doubles per attempt up to the maximum. */
  rowRetryBaseMs: 1_000,
  rowRetryMaxMs: 5 * 60_000,
  /** Pause after a database or NATS outage, doubling up to the maximum while it lasts. */
  outageBackoffMinMs: 100,
  outageBackoffMaxMs: 1_000,
  /** Attempts after which a row counts as stuck in logs and the stuck-rows metric. */
  stuckAfterAttempts: 3,
  lastErrorMaxLength: 1_000,
} as const;

interface OutboxRow {
  id: string;
  event_id: string;
  subject: string;
  type: string;
  payload: Buffer;
  headers: Record<string, string>;
  attempts: number;
}

type PublishOutcome = { row: OutboxRow } & ({ ok: true } | { ok: false; error: unknown; outage: boolean });

/** Raised when NATS reconnected while a publish was waiting: its answer will never come. */
class ReconnectedDuringPublish extends Error {
  override name = "ReconnectedDuringPublish";
}

/**
 * Publishes committed outbox rows. Several replicas may run it: leases keep them apart, and
 * JetStream drops the copies of a row two relays publish (Nats-Msg-Id).
 */
export class OutboxRelay {
  readonly #options: Required<Omit<OutboxRelayOptions, "wokenBy">>;
  /** The configuration of the handle whose commits wake this relay in memory (`localRelays`). */
  readonly #wokenBy: object | undefined;
  readonly #table: string;
  #running = false;
  #loop: Promise<void> | undefined;
  #wake: (() => void) | undefined;
  /** A NOTIFY arrived since the last drain began: the next sleep must not wait. */
  #notified = false;
  /** Wakes the relay when a row it pushed back becomes due again. */
  #retryTimer: NodeJS.Timeout | undefined;
  readonly #local: LocalRelay = {
    wake: () => this.#nudge(),
    canPublish: () => this.#options.bus.connected,
  };
  #subscription: ListenSubscription | undefined;
  #outageBackoffMs: number = relayLimits.outageBackoffMinMs;
  /** Rejects in-flight publishes when the connection comes back (their answers are lost). */
  #reconnected: { promise: Promise<never>; reject: (error: Error) => void } = pendingReconnect();
  #stopReconnectWatch: (() => void) | undefined;
  /** Events published since start; for metrics and tests. */
  published = 0;

  constructor({ wokenBy, ...options }: OutboxRelayOptions) {
    this.#options = {
      batchMax: relayLimits.batchMax,
      pollIntervalMs: relayLimits.pollIntervalMs,
      ...options,
    };
    this.#wokenBy = wokenBy?.config;
    this.#table = `"${options.schema}".outbox`;
  }

  async start(): Promise<void> {
    this.#running = true;
    if (this.#wokenBy !== undefined) {
      const relays = localRelays.get(this.#wokenBy) ?? new Set();
      relays.add(this.#local);
      localRelays.set(this.#wokenBy, relays);
    }
    this.#stopReconnectWatch = this.#options.bus.onReconnect(() => {
      this.#reconnected.reject(new ReconnectedDuringPublish("NATS reconnected during the publish"));
      this.#reconnected = pendingReconnect();
      this.#nudge();
    });
    this.#subscription = await sharedListener(this.#options.databaseUrl).subscribe(
      [`${this.#options.schema}_outbox`],
      {
        notification: () => this.#nudge(),
        lost: (error) =>
          this.#options.logger.warn(
            { err: error },
            "outbox LISTEN connection lost; polling until it is back",
          ),
        // Anything committed while the connection was away sent its NOTIFY to nobody.
        restored: () => this.#nudge(),
      },
    );
    this.#loop = this.#run();
  }

  async stop(): Promise<void> {
    this.#running = false;
    if (this.#wokenBy !== undefined) localRelays.get(this.#wokenBy)?.delete(this.#local);
    this.#stopReconnectWatch?.();
    clearTimeout(this.#retryTimer);
    this.#wake?.();
    await this.#loop;
    await this.#subscription?.close();
  }

  /** Publishes one leased batch; returns how many events it published. */
  async drainOnce(): Promise<number> {
    const rows = await this.#lease();
    if (rows.length === 0) return 0;
    const outcomes = await this.#electionsAsOutages(
      await Promise.all(rows.map((row) => this.#publishRow(row))),
    );
    const published = outcomes.filter((o) => o.ok).map((o) => o.row.id);
    const refused = outcomes.filter((o): o is PublishOutcome & { ok: false } => !o.ok);
    const outage = refused.filter((o) => o.outage);
    const failed = refused.filter((o) => !o.outage);
    if (published.length > 0) {
      await this.#options.pool.query({
        name: preparedStatementName(this.#options.pool, `outbox_delete ${this.#options.schema}`),
        text: `delete from ${this.#table} where id = any($1::bigint[])`,
        values: [published],
      });
      this.published += published.length;
      outboxPublished.inc({ service: this.#options.schema }, published.length);
    }
    // Rows caught by an outage go back as they were, ready for the next drain.
    if (outage.length > 0) {
      await this.#options.pool.query(
        `update ${this.#table} set available_at = now() where id = any($1::bigint[])`,
        [outage.map((o) => o.row.id)],
      );
    }
    if (failed.length > 0) await this.#pushBack(failed);
    if (outage.length > 0) throw outage[0]!.error;
    return published.length;
  }

  /**
   * Leases up to batchMax rows that are due, oldest first, in one statement, prepared once per
   * connection. The leased ids go to the update as an array: as `id in (subquery)` the planner
   * joined them to a scan of the whole table, dead rows included (0053).
   */
  async #lease(): Promise<OutboxRow[]> {
    const { rows } = await this.#options.pool.query<OutboxRow>({
      name: preparedStatementName(this.#options.pool, `outbox_lease ${this.#options.schema}`),
      text: `update ${this.#table} set available_at = now() + make_interval(secs => $2::float8 / 1000)
       where id = any(array(select id from ${this.#table} where available_at <= now()
                            order by id limit $1 for update skip locked))
       returning id, event_id, subject, type, payload, headers, attempts`,
      values: [this.#options.batchMax, relayLimits.leaseMs],
    });
    return rows.sort((a, b) => Number(a.id) - Number(b.id));
  }

  async #publishRow(row: OutboxRow): Promise<PublishOutcome> {
    const { bus } = this.#options;
    const headers = natsHeaders();
    for (const [key, value] of Object.entries(row.headers)) headers.set(key, value);
    headers.set(headerNames.eventId, row.event_id);
    headers.set(headerNames.eventType, row.type);
    try {
      await Promise.race([
        bus.js.publish(bus.names.subject(row.subject), row.payload, {
          msgID: row.event_id,
          headers,
          timeout: jetStreamTimeoutMs,
        }),
        this.#reconnected.promise,
      ]);
      return { row, ok: true };
    } catch (error) {
      const outage = error instanceof ReconnectedDuringPublish || !bus.connected || isNatsOutage(error);
      return { row, ok: false, error, outage };
    }
  }

  /**
   * "No responders" to a publish means that no stream takes its subject, or that the stream is
   * electing a leader (its leader's node was lost): then every publish gets it, for a few
   * seconds. When the subject's stream exists (or JetStream cannot even say, being busy with
   * the election), it is the election, an outage: the rows wait as they are, instead of being
   * pushed back and counted as refused. One lookup per stream per drain.
   */
  async #electionsAsOutages(outcomes: PublishOutcome[]): Promise<PublishOutcome[]> {
    const lookups = new Map<string, Promise<boolean>>();
    const streamExists = (stream: string) => {
      let exists = lookups.get(stream);
      if (exists === undefined) {
        exists = this.#options.bus.jsm.streams.info(stream).then(
          () => true,
          (error: unknown) => !isNotFound(error),
        );
        lookups.set(stream, exists);
      }
      return exists;
    };
    return Promise.all(
      outcomes.map(async (outcome) => {
        if (outcome.ok || outcome.outage || !isNoResponders(outcome.error)) return outcome;
        const domain = domainOfSubject(outcome.row.subject);
        if (domain === undefined) return outcome;
        const electing = await streamExists(this.#options.bus.names.stream(domain));
        return electing ? { ...outcome, outage: true } : outcome;
      }),
    );
  }

  /** Records a refused publish on each row and delays its next attempt. */
  async #pushBack(failed: (PublishOutcome & { ok: false })[]): Promise<void> {
    const updates = failed.map(({ row, error }) => ({
      id: row.id,
      error: describe(error).slice(0, relayLimits.lastErrorMaxLength),
      delayMs: Math.min(relayLimits.rowRetryBaseMs * 2 ** row.attempts, relayLimits.rowRetryMaxMs),
    }));
    await this.#options.pool.query(
      `update ${this.#table} o set attempts = o.attempts + 1, last_error = u.error,
         available_at = now() + make_interval(secs => u.delay_ms / 1000)
       from jsonb_to_recordset($1::jsonb) as u(id bigint, error text, delay_ms float8)
       where o.id = u.id`,
      [JSON.stringify(updates.map((u) => ({ id: u.id, error: u.error, delay_ms: u.delayMs })))],
    );
    outboxFailures.inc({ service: this.#options.schema }, failed.length);
    // Nobody announces a row that becomes due again: wake up for the first one.
    this.#wakeAfter(Math.min(...updates.map((u) => u.delayMs)));
    for (const { row, error } of failed) {
      const log = row.attempts + 1 >= relayLimits.stuckAfterAttempts ? "error" : "warn";
      this.#options.logger[log](
        {
          outboxId: row.id,
          eventId: row.event_id,
          subject: row.subject,
          attempts: row.attempts + 1,
          err: error,
        },
        "outbox row could not be published; it will be retried",
      );
    }
    await this.#countStuck();
  }

  async #countStuck(): Promise<void> {
    const { rows } = await this.#options.pool.query<{ n: number }>(
      `select count(*)::int as n from ${this.#table} where attempts >= $1`,
      [relayLimits.stuckAfterAttempts],
    );
    outboxStuckRows.set({ service: this.#options.schema }, rows[0]!.n);
  }

  #wakeAfter(ms: number): void {
    clearTimeout(this.#retryTimer);
    this.#retryTimer = setTimeout(() => this.#nudge(), ms);
    this.#retryTimer.unref();
  }

  async #run(): Promise<void> {
    while (this.#running) {
      let published = 0;
      this.#notified = false;
      const drainStarted = performance.now();
      try {
        if (!this.#options.bus.connected) {
          await this.#options.bus.whenConnected(relayLimits.outageBackoffMaxMs);
          continue;
        }
        published = await this.drainOnce();
        this.#outageBackoffMs = relayLimits.outageBackoffMinMs;
      } catch (error) {
        this.#options.logger.warn(
          { err: error, retryInMs: this.#outageBackoffMs },
          "outbox relay paused: outage",
        );
        await this.#sleep(this.#outageBackoffMs);
        this.#outageBackoffMs = Math.min(this.#outageBackoffMs * 2, relayLimits.outageBackoffMaxMs);
        continue;
      }
      if (published === 0) {
        const listening = this.#subscription?.listening === true;
        await this.#sleep(listening ? this.#options.pollIntervalMs : relayLimits.unlistenedPollIntervalMs);
      } else if (published < this.#options.batchMax) {
        // The gathering counts from the start of the drain: a slow drain gathered already.
        const gathered = performance.now() - drainStarted;
        if (gathered < relayLimits.gatherMs) await this.#sleep(relayLimits.gatherMs - gathered, false);
      }
    }
  }

  #nudge(): void {
    this.#notified = true;
    this.#wake?.();
  }

  /** Sleeps `ms`; unless told otherwise a NOTIFY or stop() ends the sleep early. */
  #sleep(ms: number, wakeOnNotify = true): Promise<void> {
    // stop() during a drain found no sleep to end: the next one must not begin.
    if (!this.#running) return Promise.resolve();
    // A NOTIFY during the drain may be for a row the drain's snapshot did not see.
    if (wakeOnNotify && this.#notified) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        if (this.#wake === wake) this.#wake = undefined;
        resolve();
      };
      // A sleep that lets a batch gather ends early only for stop().
      const wake = wakeOnNotify ? done : () => (this.#running ? undefined : done());
      const timer = setTimeout(done, ms);
      this.#wake = wake;
    });
  }
}

/**
 * nats.js's answer to a publish nobody took: an error ("jetstream is not enabled") caused by the
 * request's "no responders".
 */
function isNoResponders(error: unknown): boolean {
  return error instanceof Error && error.cause instanceof RequestError && error.cause.isNoResponders();
}

function pendingReconnect(): { promise: Promise<never>; reject: (error: Error) => void } {
  let reject!: (error: Error) => void;
  const promise = new Promise<never>((_, fail) => {
    reject = fail;
  });
  // Nobody may be waiting when it rejects.
  promise.catch(() => {});
  return { promise, reject };
}

/** The error with its causes: "JetStreamNotEnabled: … ← NoResponders: no responders: …". */
function describe(error: unknown): string {
  const parts: string[] = [];
  for (let link = error, depth = 0; link !== undefined && depth < 4; depth++) {
    parts.push(link instanceof Error ? `${link.name}: ${link.message}` : String(link));
    link = link instanceof Error ? link.cause : undefined;
  }
  return parts.join(" ← ");
}
