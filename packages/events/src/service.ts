// The event plumbing every service starts the same way: a bus with its streams ensured, the
// outbox relay of its schema (for services that publish) and a dead-letter mover (for
// services that consume). Settings come from the shared service config (@ovation/config).
import { type Database, nativePool } from "@ovation/db";
import type { Logger } from "pino";
import { EventBus } from "./bus.ts";
import { DlqMover } from "./dlq.ts";
import { OutboxRelay } from "./outbox.ts";

export interface BusSettings {
  NATS_URL: string;
  OVATION_PREFIX: string;
  NATS_STREAM_MAX_BYTES: number;
}

/** Connects as `name` and creates or updates the domain, DLQ and advisory streams. */
export async function connectServiceBus(name: string, config: BusSettings): Promise<EventBus> {
  const bus = await EventBus.connect({
    url: config.NATS_URL,
    prefix: config.OVATION_PREFIX,
    name,
    streamMaxBytes: config.NATS_STREAM_MAX_BYTES,
  });
  await bus.ensureStreams();
  return bus;
}

/** Starts the relay that publishes `schema`'s outbox. */
export async function startOutboxRelay(options: {
  orm: Database;
  databaseUrl: string;
  schema: string;
  bus: EventBus;
  logger: Logger;
}): Promise<OutboxRelay> {
  const relay = new OutboxRelay({
    pool: await nativePool(options.orm),
    databaseUrl: options.databaseUrl,
    schema: options.schema,
    bus: options.bus,
    logger: options.logger,
  });
  await relay.start();
  return relay;
}

/**
 * Starts this process's share of the dead-letter mover. Every consuming service runs one, so
 * advisories are moved as long as any of them is up, whoever's consumer they are about.
 */
export async function startDlqMover(bus: EventBus, logger: Logger): Promise<DlqMover> {
  const mover = new DlqMover({ bus, logger: logger.child({ component: "dlq-mover" }) });
  await mover.start();
  return mover;
}
