// The event plumbing every service starts the same way: a bus with its streams ensured, the
// outbox relay of its schema (for services that publish) and a dead-letter mover (for
// services that consume). Settings come from the shared service config (@ovation/config).
import { type Database, nativePool } from "@ovation/db";
import type { Logger } from "pino";
import { EventBus } from "./bus.ts";
import { DlqMover } from "./dlq.ts";
import { OutboxRelay } from "./outbox.ts";
import { isBusIdentity } from "./permissions.ts";

export interface BusSettings {
  NATS_URL: string;
  OVATION_PREFIX: string;
  NATS_STREAM_MAX_BYTES: number;
  /** Replicas of the streams it creates or owns: 1 on one server, 3 on a cluster. */
  NATS_REPLICAS: number;
  /** The service's own nkey seed (anonymous without it: config allows that on loopback only). */
  NATS_NKEY_FILE?: { seed: Uint8Array } | undefined;
}

/**
 * Connects as service `name` (its identity on the bus, with its nkey) and makes sure the streams
 * it works with exist, updating those it owns.
 */
export async function connectServiceBus(name: string, config: BusSettings): Promise<EventBus> {
  if (!isBusIdentity(name))
    throw new Error(`no bus permissions for service ${name}: add it to packages/events/src/permissions.ts`);
  const bus = await EventBus.connect({
    url: config.NATS_URL,
    prefix: config.OVATION_PREFIX,
    name,
    streamMaxBytes: config.NATS_STREAM_MAX_BYTES,
    replicas: config.NATS_REPLICAS,
    identity: name,
    nkeySeed: config.NATS_NKEY_FILE?.seed,
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
  /** The safety-net poll (OUTBOX_POLL_INTERVAL_MS); relayLimits.pollIntervalMs by default. */
  pollIntervalMs?: number;
}): Promise<OutboxRelay> {
  const relay = new OutboxRelay({
    pool: await nativePool(options.orm),
    databaseUrl: options.databaseUrl,
    schema: options.schema,
    bus: options.bus,
    logger: options.logger,
    // Commits of the service's own transactions wake it (0035, 0051).
    wokenBy: options.orm,
    ...(options.pollIntervalMs === undefined ? {} : { pollIntervalMs: options.pollIntervalMs }),
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
