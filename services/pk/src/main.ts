// PK service wiring, top to bottom: config, database, event bus, outbox relay, consumers (gift
// scoring, live rooms), timers, RPC server. `startPk` is what tests start in-process.
import type { DescMessage } from "@bufbuild/protobuf";
import { createTokenVerifier } from "@ovation/auth";
import { loadConfig, tokenVerifierSettings } from "@ovation/config";
import { type Database, nativePool, openDatabase } from "@ovation/db";
import {
  ConsumerRunner,
  connectServiceBus,
  type EventBus,
  type OutboxRelay,
  startDlqMover,
  startOutboxRelay,
} from "@ovation/events";
import { type Jobs, prepareJobs, startJobs } from "@ovation/jobs";
import { PkService } from "@ovation/proto/gen/ovation/pk/v1/pk_pb.ts";
import { closeOnSignals, createLogger, type Logger, type RunningServer, startServer } from "@ovation/server";
import { pkServiceImpl } from "./api/pk-service.ts";
import { type BattleDeps, endWindow, expireInvitation, pkJobs, settleBattle } from "./app/battles.ts";
import { liveScores as liveScoreAnnouncer } from "./app/live-scores.ts";
import { type PkConfig, pkConfigSchema, pkServiceName } from "./config.ts";
import { roomEndedConsumer, roomStartedConsumer } from "./events/room-consumers.ts";
import { pkScoreConsumerName, scoreConsumer } from "./events/score-consumer.ts";
import { sideBoostConsumer } from "./events/side-boost-consumer.ts";
import { pkMigrations } from "./store/migrations.ts";
import { PkStore } from "./store/pk-store.ts";

export const pkSchema = "pk";

export interface PkApp {
  config: PkConfig;
  server: RunningServer;
  store: PkStore;
  orm: Database;
  bus: EventBus;
  relay: OutboxRelay;
  deps: BattleDeps;
  /** pk-score, pk-room-started, pk-room-ended, pk-side-boosts (started unless PK_RUN_CONSUMERS=false). */
  consumers: ConsumerRunner<DescMessage>[];
  logger: Logger;
  close(): Promise<void>;
}

/** Gift events in the GIFT stream that pk-score has not acknowledged yet. */
async function unscoredGifts(bus: EventBus): Promise<number> {
  try {
    const info = await bus.jsm.consumers.info(bus.names.stream("GIFT"), pkScoreConsumerName);
    return info.num_pending + info.num_ack_pending;
  } catch {
    return Number.POSITIVE_INFINITY;
  }
}

export async function startPk(env: Record<string, string | undefined> = process.env): Promise<PkApp> {
  const config = loadConfig(pkConfigSchema, env);
  const logger = createLogger(pkServiceName, config.LOG_LEVEL);
  const orm = await openDatabase({
    url: config.DATABASE_URL,
    schema: pkSchema,
    entities: [],
    migrations: pkMigrations,
    poolMax: config.DATABASE_POOL_MAX,
  });
  const store = new PkStore(orm);
  const bus = await connectServiceBus(pkServiceName, config);
  const relay = await startOutboxRelay({
    orm,
    databaseUrl: config.DATABASE_URL,
    schema: pkSchema,
    bus,
    logger,
  });
  const deps: BattleDeps = {
    store,
    timings: {
      durationMinSeconds: config.PK_DURATION_MIN_SECONDS,
      bonusRoundMinSeconds: config.PK_BONUS_ROUND_MIN_SECONDS,
      inviteTtlSeconds: config.PK_INVITE_TTL_SECONDS,
      settleDelayMs: config.PK_SETTLE_DELAY_MS,
      settleGraceMs: config.PK_SETTLE_GRACE_MS,
    },
    unscoredGifts: () => unscoredGifts(bus),
    logger,
  };
  const liveScores = liveScoreAnnouncer(orm, store, logger);
  const consumerSettings = {
    retryBackoffMs: config.EVENTS_RETRY_BACKOFF_MS,
    ackWaitMs: config.EVENTS_ACK_WAIT_MS,
  };
  const runners = [
    new ConsumerRunner(scoreConsumer(store, liveScores, logger, consumerSettings), { bus, orm, logger }),
    new ConsumerRunner(roomStartedConsumer(deps, consumerSettings), { bus, orm, logger }),
    new ConsumerRunner(roomEndedConsumer(deps, consumerSettings), { bus, orm, logger }),
    new ConsumerRunner(sideBoostConsumer(store, consumerSettings), { bus, orm, logger }),
  ];
  const pool = await nativePool(orm);
  let jobs: Jobs | undefined;
  if (config.PK_RUN_CONSUMERS) {
    for (const runner of runners) await runner.start();
    jobs = await startJobs({
      pool,
      logger,
      tasks: {
        [pkJobs.inviteExpiry]: (payload) => expireInvitation(deps, battleOf(payload)),
        [pkJobs.windowEnd]: (payload) => endWindow(deps, battleOf(payload)),
        [pkJobs.settle]: (payload) => settleBattle(deps, battleOf(payload)),
      },
    });
  } else {
    // An API-only replica schedules timers, so the job schema must exist.
    await prepareJobs({ pool, logger });
  }
  const mover = await startDlqMover(bus, logger);
  const server = await startServer({
    name: pkServiceName,
    host: config.HOST,
    port: config.PORT,
    logger,
    verifyToken: createTokenVerifier(tokenVerifierSettings(config)),
    services: [PkService],
    routes: (router) => router.service(PkService, pkServiceImpl(deps)),
    ready: async () => (await orm.isConnected()) && !bus.connection.isClosed(),
  });

  return {
    config,
    server,
    store,
    orm,
    bus,
    relay,
    deps,
    consumers: runners as ConsumerRunner<DescMessage>[],
    logger,
    async close() {
      await server.close();
      await jobs?.stop();
      liveScores.stop();
      for (const runner of runners) await runner.stop();
      await mover.stop();
      await relay.stop();
      await bus.close();
      await orm.close();
    },
  };
}

function battleOf(payload: unknown): string {
  const battleId = (payload as { battleId?: unknown } | null)?.battleId;
  if (typeof battleId !== "string")
    throw new Error(`job payload without a battleId: ${JSON.stringify(payload)}`);
  return battleId;
}

if (import.meta.main) closeOnSignals(await startPk());
