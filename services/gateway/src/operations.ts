// What an operator looks at besides dead letters (those are DlqService's): the lag of every
// durable consumer, and the outbox rows JetStream refused. The code is the operator commands'
// own (`./ov outbox` runs the same OutboxAdmin); this module only finds what to ask.
//
// Consumer lag comes from JetStream's consumer info, which the gateway may read on every domain
// stream it follows (packages/events/src/permissions.ts keeps INFO open to it); the durable
// consumers are the ones the bus permissions table declares, so a new consumer shows up here
// without a change. Outbox rows come from each publishing service's schema, through a pool of
// one connection: an admin's look never takes a connection the notifications need.

import { databasePool } from "@ovation/db";
import {
  type BusGrant,
  busGrants,
  type EventBus,
  isNotFound,
  OutboxAdmin,
  type OutboxRowState,
} from "@ovation/events";
import type pg from "pg";

export interface ConsumerLag {
  /** The service that runs the consumer. */
  service: string;
  /** Its stream, unprefixed ("GIFT"). */
  stream: string;
  consumer: string;
  /** Messages not delivered yet. */
  pending: number;
  /** Delivered and not acknowledged yet. */
  ackPending: number;
  /** Delivered more than once so far (retries). */
  redelivered: number;
}

export interface FailingOutboxRow extends OutboxRowState {
  /** The service (and schema) whose outbox holds the row. */
  service: string;
}

/** The durable consumers of the table, by service and stream; the dead-letter mover is not one. */
export const durableConsumers: readonly { service: string; stream: string; consumer: string }[] =
  Object.entries(busGrants as Record<string, BusGrant>).flatMap(([service, grant]) =>
    Object.entries(grant.durables).flatMap(([stream, names]) =>
      (names ?? []).map((consumer) => ({ service, stream, consumer })),
    ),
  );

/** Services with an outbox: those that publish events. Their schema is their name. */
export const outboxServices: readonly string[] = Object.entries(busGrants as Record<string, BusGrant>)
  .filter(([, grant]) => grant.publishes.length > 0)
  .map(([service]) => service);

/** Postgres' "undefined_table": the service has not created its schema here (not deployed). */
const undefinedTable = "42P01";

export class Operations {
  readonly #bus: EventBus;
  readonly #pool: pg.Pool | undefined;

  /** Without a database URL there is no outbox view (the gateway runs without a database). */
  constructor(bus: EventBus, databaseUrl: string | undefined) {
    this.#bus = bus;
    this.#pool = databaseUrl === undefined ? undefined : databasePool(databaseUrl, { max: 1 });
  }

  get hasOutboxes(): boolean {
    return this.#pool !== undefined;
  }

  /** Every durable consumer that exists now, with what it has still to do. */
  async consumerLag(): Promise<ConsumerLag[]> {
    const found = await Promise.all(
      durableConsumers.map(async (durable) => {
        try {
          const info = await this.#bus.jsm.consumers.info(
            this.#bus.names.stream(durable.stream),
            durable.consumer,
          );
          return [
            {
              ...durable,
              pending: info.num_pending,
              ackPending: info.num_ack_pending,
              redelivered: info.num_redelivered,
            },
          ];
        } catch (error) {
          // Not created yet: its service has not started (or is not part of this deployment).
          if (isNotFound(error)) return [];
          throw error;
        }
      }),
    );
    return found.flat();
  }

  /** Rows each outbox could not publish yet, oldest first per service (at most 100 each). */
  async failingOutboxRows(): Promise<FailingOutboxRow[]> {
    const pool = this.#requirePool();
    const rows: FailingOutboxRow[] = [];
    for (const service of outboxServices) {
      try {
        for (const row of await new OutboxAdmin(pool, service).failing()) rows.push({ ...row, service });
      } catch (error) {
        if ((error as { code?: unknown }).code !== undefinedTable) throw error;
      }
    }
    return rows;
  }

  /** Makes a row due now; false when there is no such row (it went out meanwhile). */
  async retryOutboxRow(service: string, id: string): Promise<boolean> {
    if (!outboxServices.includes(service)) return false;
    return new OutboxAdmin(this.#requirePool(), service).retryNow(id);
  }

  async close(): Promise<void> {
    await this.#pool?.end();
  }

  #requirePool(): pg.Pool {
    if (this.#pool === undefined) throw new Error("the outbox view needs DATABASE_URL");
    return this.#pool;
  }
}
