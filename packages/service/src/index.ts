// The shape of a service, declared instead of copied. A service's main.ts says what it is made
// of: its config schema, its database, whether it publishes events, and a `build` step that
// turns the started infrastructure into its parts (RPC routes, durable consumers, jobs, caches
// and other components, readiness checks). This package owns everything else, the same for
// every service: loading config, logging, the order of start and of shutdown, draining, the
// RPC server (Connect, gRPC, gRPC-Web, health, reflection, metrics), signals, and cleaning up
// what had started when a later step fails.
//
// Start: config → logger → database (migrations) → bus (streams) → outbox relay → `build` →
// components → consumers and the dead-letter mover → jobs → server.
// Stop, the other way round: server (drains its calls) → jobs → consumers and mover →
// components → relay → bus → database.
//
// RUN_CONSUMERS=false makes an API-only replica: no consumers, no mover, no job runner (the job
// schema is still prepared: its handlers schedule timers).
import type { DescMessage, DescService } from "@bufbuild/protobuf";
import type { Client, ConnectRouter, Interceptor } from "@connectrpc/connect";
import {
  bearerInterceptor,
  createTokenVerifier,
  importSigningKey,
  serviceTokenSource,
  type TokenVerifier,
} from "@ovation/auth";
import { loadConfig, type ServiceConfig, tokenVerifierSettings } from "@ovation/config";
import {
  checkPooledSession,
  type Database,
  type DatabaseOptions,
  databaseProbe,
  nativePool,
  openDatabase,
  sharedListener,
} from "@ovation/db";
import {
  ConsumerRunner,
  type ConsumerSpec,
  connectServiceBus,
  type DlqMover,
  type EventBus,
  type OutboxRelay,
  startDlqMover,
  startOutboxRelay,
} from "@ovation/events";
import { type JobHandler, type Jobs, prepareJobs, registerFailedJobsMetric, startJobs } from "@ovation/jobs";
import {
  createLogger,
  createServiceClient,
  type Logger,
  type RunningServer,
  startServer,
} from "@ovation/server";
import type pg from "pg";
import type { z } from "zod";

/** Config every service has (serviceConfigSchema), plus what the runner reads. */
export type BaseConfig = Omit<ServiceConfig, "DATABASE_URL"> & {
  /** Optional only for a service whose database is optional (the gateway). */
  DATABASE_URL?: string | undefined;
  PORT: number;
  DATABASE_POOL_MAX?: number;
  RUN_CONSUMERS?: boolean;
  SERVICE_KEY_FILE?: { jwk: Parameters<typeof importSigningKey>[0] } | undefined;
};

export interface DatabaseSpec {
  /** The service's own schema, for example "wallet". */
  schema: string;
  migrations: DatabaseOptions["migrations"];
  entities?: DatabaseOptions["entities"];
}

/** Something with a life of its own inside the service: a cache, an announcer, a listener. */
export interface Component {
  name: string;
  start?(): Promise<void>;
  stop(): Promise<void>;
}

/** A server of the service's own instead of the RPC server (the gateway's HTTP and WebSocket). */
export interface OwnServer extends Component {
  start(): Promise<void>;
  readonly url: string;
  readonly port: number;
}

export interface ServiceParts<Exposed extends object> {
  /** The RPC services this process implements and their handlers. */
  rpc?: {
    services: readonly DescService[];
    routes: (router: ConnectRouter) => void;
    interceptors?: Interceptor[];
  };
  /** Or a server of its own. */
  server?: OwnServer;
  /** Durable consumers; started unless RUN_CONSUMERS=false. */
  consumers?: readonly ConsumerSpec<DescMessage>[];
  /** Durable timers this process runs (and recurring jobs, in graphile-worker's crontab format). */
  jobs?: { tasks: Readonly<Record<string, JobHandler>>; crontab?: string };
  /** Started after the consumers' infrastructure, before them; stopped after them. */
  components?: readonly Component[];
  /** More readiness conditions for /readyz (database and bus are checked already). */
  ready?: () => Promise<boolean>;
  /** Handles the service's tests and benchmarks reach for (its stores, caches, deps). */
  expose?: Exposed;
}

/** What `build` gets: the started infrastructure and ways to reach other services. */
export interface ServiceContext<Config> {
  config: Config;
  logger: Logger;
  /** The service's database (throws when it has none). */
  readonly orm: Database;
  readonly hasDatabase: boolean;
  /** The event bus (throws for a service without one). */
  readonly bus: EventBus;
  /** The database's native pg pool, for statements that bypass MikroORM. */
  pool(): Promise<pg.Pool>;
  /** Verifies bearer tokens as the RPC server does (for consent tokens and the gateway). */
  verifyToken: TokenVerifier;
  /** A client of another service that calls as this one, with tokens signed by its own key. */
  serviceClient<Service extends DescService>(service: Service, baseUrl: string): Client<Service>;
  /** Retry and redelivery settings every consumer of the service shares. */
  consumerSettings: Pick<ConsumerSpec<DescMessage>, "retryBackoffMs" | "ackWaitMs">;
}

export interface ServiceDefinition<Schema extends z.ZodType<BaseConfig>, Exposed extends object> {
  /** The service's identity: its key id, its bus identity, its logs' name. */
  name: string;
  config: Schema;
  /** Its database; a function when it has one only in some configurations. */
  database?: DatabaseSpec | ((config: z.output<Schema>) => DatabaseSpec | undefined);
  /** It publishes events through its outbox (runs the relay). */
  publishes?: boolean;
  /** False for a service that never touches NATS (the card processor). */
  bus?: boolean;
  build(context: ServiceContext<z.output<Schema>>): ServiceParts<Exposed> | Promise<ServiceParts<Exposed>>;
}

/** A started service: the infrastructure it runs on, its parts, and what it exposes. */
export type RunningService<Config, Exposed extends object> = Exposed & {
  config: Config;
  logger: Logger;
  /** The RPC server (absent when the service has a server of its own). */
  server: RunningServer;
  /** Where it listens, whichever server it runs. */
  url: string;
  port: number;
  orm: Database;
  bus: EventBus;
  /** The outbox relay (tests may stop it and put another in its place). */
  relay: OutboxRelay;
  consumers: Map<string, ConsumerRunner<DescMessage>>;
  close(): Promise<void>;
};

/** Declares a service (checks nothing yet; `runService` does). */
export const defineService = <Schema extends z.ZodType<BaseConfig>, Exposed extends object = object>(
  definition: ServiceDefinition<Schema, Exposed>,
) => definition;

/** Starts a service; on a failure part-way, stops what had started and rethrows. */
export async function runService<Schema extends z.ZodType<BaseConfig>, Exposed extends object>(
  definition: ServiceDefinition<Schema, Exposed>,
  env: Record<string, string | undefined> = process.env,
): Promise<RunningService<z.output<Schema>, Exposed>> {
  const config = loadConfig(definition.config, env);
  const logger = createLogger(definition.name, config.LOG_LEVEL);
  const stops: { what: string; stop: () => Promise<unknown> }[] = [];
  const onStop = (what: string, stop: () => Promise<unknown>) => stops.push({ what, stop });
  const stopAll = async () => {
    for (const { what, stop } of stops.splice(0).reverse()) {
      try {
        await stop();
      } catch (error) {
        logger.error({ err: error, what }, "could not stop a part");
      }
    }
  };
  try {
    return await start(definition, config, logger, onStop, stopAll);
  } catch (error) {
    await stopAll();
    throw error;
  }
}

async function start<Schema extends z.ZodType<BaseConfig>, Exposed extends object>(
  definition: ServiceDefinition<Schema, Exposed>,
  config: z.output<Schema>,
  logger: Logger,
  onStop: (what: string, stop: () => Promise<unknown>) => void,
  stopAll: () => Promise<void>,
): Promise<RunningService<z.output<Schema>, Exposed>> {
  const databaseSpec =
    typeof definition.database === "function" ? definition.database(config) : definition.database;
  let orm: Database | undefined;
  // Session-bound work (the LISTEN connection, the start-up lock) bypasses a pooler (0043).
  const directUrl = config.DATABASE_DIRECT_URL ?? config.DATABASE_URL;
  const pooled =
    config.DATABASE_DIRECT_URL !== undefined && config.DATABASE_DIRECT_URL !== config.DATABASE_URL;
  if (databaseSpec !== undefined) {
    const timeouts = {
      statementMs: config.DATABASE_STATEMENT_TIMEOUT_MS,
      lockMs: config.DATABASE_LOCK_TIMEOUT_MS,
      idleInTransactionMs: config.DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS,
    };
    orm = await openDatabase({
      url: required(config.DATABASE_URL, "DATABASE_URL"),
      directUrl,
      schema: databaseSpec.schema,
      entities: databaseSpec.entities ?? [],
      migrations: databaseSpec.migrations,
      poolMax: config.DATABASE_POOL_MAX,
      timeouts,
    });
    const opened = orm;
    onStop("database", () => opened.close());
    if (pooled) await checkPooledSession(await nativePool(opened), databaseSpec.schema, timeouts);
  }
  let bus: EventBus | undefined;
  if (definition.bus !== false) {
    bus = await connectServiceBus(definition.name, config);
    const connected = bus;
    onStop("bus", () => connected.close());
  }
  const running = { relay: undefined as OutboxRelay | undefined };
  if (definition.publishes === true) {
    running.relay = await startOutboxRelay({
      orm: required(orm, "a database for its outbox"),
      databaseUrl: required(directUrl, "DATABASE_URL"),
      schema: databaseSpec!.schema,
      bus: required(bus, "a bus for its outbox"),
      logger,
      pollIntervalMs: config.OUTBOX_POLL_INTERVAL_MS,
    });
    // Tests may put another relay in place: whichever runs at shutdown is stopped.
    onStop("outbox relay", () => running.relay!.stop());
  }
  const verifyToken = createTokenVerifier(tokenVerifierSettings(config));
  const signingKey =
    config.SERVICE_KEY_FILE === undefined ? undefined : await importSigningKey(config.SERVICE_KEY_FILE.jwk);
  const context: ServiceContext<z.output<Schema>> = {
    config,
    logger,
    get orm() {
      return required(orm, "a database");
    },
    hasDatabase: orm !== undefined,
    get bus() {
      return required(bus, "an event bus");
    },
    pool: () => nativePool(required(orm, "a database")),
    verifyToken,
    serviceClient(service, baseUrl) {
      const key = required(signingKey, "its own key (SERVICE_KEY_FILE) to call other services");
      const token = bearerInterceptor(serviceTokenSource(definition.name, key, config.JWT_AUDIENCE));
      return createServiceClient(service, {
        baseUrl,
        interceptors: [token],
        defaultTimeoutMs: config.SERVICE_CALL_TIMEOUT_MS,
      });
    },
    consumerSettings: {
      retryBackoffMs: config.EVENTS_RETRY_BACKOFF_MS,
      ackWaitMs: config.EVENTS_ACK_WAIT_MS,
    },
  };
  const parts = await definition.build(context);

  for (const component of parts.components ?? []) {
    await component.start?.();
    onStop(component.name, () => component.stop());
  }
  const runConsumers = config.RUN_CONSUMERS !== false;
  const consumers = new Map<string, ConsumerRunner<DescMessage>>();
  for (const spec of parts.consumers ?? []) {
    const runner = new ConsumerRunner(spec, {
      bus: required(bus, "a bus for its consumers"),
      orm: required(orm, "a database for its consumers"),
      logger,
    });
    consumers.set(spec.name, runner);
  }
  if (runConsumers && consumers.size > 0) {
    for (const runner of consumers.values()) {
      await runner.start();
      onStop(`consumer ${runner.spec.name}`, () => runner.stop());
    }
    // Every consuming process runs its share of the dead-letter mover (0013).
    const mover: DlqMover = await startDlqMover(bus!, logger);
    onStop("dlq mover", () => mover.stop());
  }
  if (parts.jobs !== undefined) {
    const pool = await context.pool();
    if (runConsumers) {
      const jobs: Jobs = await startJobs({
        pool,
        logger,
        tasks: parts.jobs.tasks,
        crontab: parts.jobs.crontab,
        pollIntervalMs: config.JOBS_POLL_INTERVAL_MS,
        listener: sharedListener(required(directUrl, "DATABASE_URL")),
        preparedStatements: !pooled,
      });
      onStop("jobs", () => jobs.stop());
    } else {
      await prepareJobs({ pool, logger });
    }
    registerFailedJobsMetric(pool);
  }

  let server: RunningServer | undefined;
  if (parts.rpc !== undefined) {
    const rpc = parts.rpc;
    const databaseReachable = orm === undefined ? undefined : await databaseProbe(orm);
    server = await startServer({
      name: definition.name,
      host: config.HOST,
      port: config.PORT,
      logger,
      verifyToken,
      services: rpc.services,
      routes: rpc.routes,
      interceptors: rpc.interceptors,
      ready: async () =>
        (databaseReachable === undefined || (await databaseReachable())) &&
        (bus === undefined || !bus.connection.isClosed()) &&
        (parts.ready === undefined || (await parts.ready())),
    });
    const started = server;
    onStop("server", () => started.close());
  } else if (parts.server !== undefined) {
    await parts.server.start();
    onStop(parts.server.name, () => parts.server!.stop());
  }

  let closing: Promise<void> | undefined;
  const service = {
    ...(parts.expose as Exposed),
    config,
    logger,
    consumers,
    get server() {
      return required(server, "an RPC server");
    },
    url: server?.url ?? required(parts.server, "a server").url,
    port: server?.port ?? required(parts.server, "a server").port,
    get orm() {
      return required(orm, "a database");
    },
    get bus() {
      return required(bus, "an event bus");
    },
    get relay() {
      return required(running.relay, "an outbox relay");
    },
    set relay(relay: OutboxRelay) {
      running.relay = relay;
    },
    close: () => {
      closing ??= stopAll();
      return closing;
    },
  };
  return service as RunningService<z.output<Schema>, Exposed>;
}

function required<T>(value: T | undefined, what: string): T {
  if (value === undefined) throw new Error(`this service has no ${what}`);
  return value;
}

/** Runs a service until SIGINT or SIGTERM, then stops it (draining) and exits. */
export async function serve<Schema extends z.ZodType<BaseConfig>, Exposed extends object>(
  definition: ServiceDefinition<Schema, Exposed>,
): Promise<void> {
  const service = await runService(definition);
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    process.once(signal, () => {
      service.logger.info({ signal }, "shutting down");
      service.close().then(
        () => process.exit(0),
        (error: unknown) => {
          service.logger.error({ err: error }, "shutdown failed");
          process.exit(1);
        },
      );
    });
  }
}
