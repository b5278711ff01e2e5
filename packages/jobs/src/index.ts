// Durable timers, the one way the project does them: graphile-worker jobs in the service's own
// database. A job is added with the SQL function add_job inside the transaction of the state
// change that needs it (a battle starting schedules its end; a hold being reserved schedules
// its expiry), so the two commit together or not at all. Workers in every replica take due
// jobs with SKIP LOCKED, so a job runs once however many replicas run; jobs survive restarts;
// a job key names a job so it can be replaced or cancelled. Handlers must be idempotent: a job
// whose worker crashed mid-run is run again.
//
// Every service keeps its jobs in one schema of the database, `ovation_jobs`, and each runner
// takes only the tasks it knows. One schema, not one per service: graphile-worker's NOTIFY
// channels ("jobs:insert", "worker:migrate") are database-wide, so a second job schema being
// created announces a "breaking migration" that shuts down every other runner in the database
// (measured: the wallet's runner stopped when PK first started). Job keys are therefore
// prefixed with the service ("pk:end:<battle>").
//
// Runners are woken, not polled (0035): a job due now is announced by graphile-worker's NOTIFY;
// a job scheduled for later by this process sets a timer in this process's runner for its time
// (scheduleJob), and a failed job one for its retry. The poll is a long safety net for jobs
// other processes schedule for later (another replica that died, `./ov jobs retry`). A job due
// later sends no NOTIFY (0052): graphile-worker is patched so, because a NOTIFY holds a lock of
// the whole database through its transaction's commit, and woke every runner for nothing.
//
// graphile-worker holds a pool connection for ever for its LISTEN. Given the process's shared
// LISTEN connection (`listener`), it gets a stand-in instead (listeningPool below), so a process
// costs one LISTEN connection whatever it runs, and behind a transaction-mode pooler the LISTEN
// stays on the direct connection that can hold it (decision 0043).
import { AsyncLocalStorage } from "node:async_hooks";
import { EventEmitter } from "node:events";
import { readFile } from "node:fs/promises";
import type { EntityManager, ListenSubscription, SharedListener } from "@ovation/db";
import { metricsRegistry } from "@ovation/server";
import {
  type Runner,
  run,
  runMigrations,
  type Task,
  type WorkerEvents,
  Logger as WorkerLogger,
  type WorkerPool,
} from "graphile-worker";
import type pg from "pg";
import type { Logger } from "pino";
import { Gauge } from "prom-client";

/** A job handler: `payload` is what was scheduled; throwing retries it with a growing delay. */
export type JobHandler = (
  payload: unknown,
  job: { key: string | undefined; attempts: number },
) => Promise<void>;

export interface JobsOptions {
  pool: pg.Pool;
  tasks: Readonly<Record<string, JobHandler>>;
  /** Recurring jobs, in graphile-worker's crontab format. */
  crontab?: string;
  logger: Logger;
  /** Jobs one replica runs at once. */
  concurrency?: number;
  /**
   * How often to look for jobs that became due without anyone saying so: jobs due now are
   * announced through LISTEN/NOTIFY, and jobs this process schedules for later or retries wake
   * its runner at their time; this bounds the delay of the rest (another process's timers).
   */
  pollIntervalMs?: number;
  /**
   * The process's shared LISTEN connection (`sharedListener` on a direct URL). Without it
   * graphile-worker takes a connection of `pool` for its LISTEN, for as long as it runs.
   */
  listener?: SharedListener;
  /**
   * Named prepared statements for graphile-worker's queries (its default). False behind a
   * transaction-mode pooler (PgBouncer 1.18), where a statement prepared in one transaction's
   * server connection is missing in the next's.
   */
  preparedStatements?: boolean;
}

export const jobDefaults = { concurrency: 4, pollIntervalMs: 5_000 } as const;
/**
 * Timers of jobs due at nearly the same time share one wake-up: at most one per this long, so a
 * burst of deadlines costs a bounded number of job queries (a wake-up finds them all).
 */
const wakeGranularityMs = 50;
/** Distinct wake-up times a runner keeps; beyond, the poll finds the jobs. */
const wakeTimesMax = 100_000;

/** This process's runners: each is woken when a job it may run falls due. */
const localRunners = new Set<DueTimer>();

/**
 * Wakes a runner at the times jobs fall due: one timer for the earliest, times rounded up to
 * `wakeGranularityMs`. A wake-up for a job that was cancelled or replaced meanwhile costs one
 * empty look for jobs.
 *
 * Its timers run in the runner's own async context, not in the caller's: `at` is called inside
 * the transaction that schedules a job, and a timer armed there would run the job inside that
 * transaction's AsyncLocalStorage context, where MikroORM resolves "the current entity manager"
 * to the (finished) scheduling transaction, another service's in a shared test process.
 */
class DueTimer {
  readonly #times = new Set<number>();
  #timer: NodeJS.Timeout | undefined;
  #next = Number.POSITIVE_INFINITY;

  readonly #wake: () => void;
  readonly #inOwnContext = AsyncLocalStorage.snapshot();

  constructor(wake: () => void) {
    this.#wake = wake;
  }

  at(time: number): void {
    const slot = Math.ceil(time / wakeGranularityMs) * wakeGranularityMs;
    if (this.#times.has(slot) || this.#times.size >= wakeTimesMax) return;
    this.#times.add(slot);
    if (slot < this.#next) this.#inOwnContext(() => this.#arm(slot));
  }

  stop(): void {
    clearTimeout(this.#timer);
    this.#times.clear();
  }

  #arm(slot: number): void {
    clearTimeout(this.#timer);
    this.#next = slot;
    this.#timer = setTimeout(() => this.#fire(), Math.max(0, slot - Date.now()));
    this.#timer.unref();
  }

  #fire(): void {
    const now = Date.now();
    let next = Number.POSITIVE_INFINITY;
    for (const slot of this.#times) {
      if (slot <= now) this.#times.delete(slot);
      else if (slot < next) next = slot;
    }
    this.#next = Number.POSITIVE_INFINITY;
    if (next !== Number.POSITIVE_INFINITY) this.#arm(next);
    this.#wake();
  }
}

/**
 * A job due this soon may fall due before the transaction that schedules it commits, and the
 * wake-up at its time then finds nothing: such a job gets a second wake-up this much later.
 */
const commitAllowanceMs = 1_000;

/** Tells this process's runners that a job falls due at `time` (ms since the epoch). */
function announceDue(time: number): void {
  // A job due now is announced by graphile-worker's own NOTIFY.
  const now = Date.now();
  if (time <= now) return;
  for (const runner of localRunners) {
    runner.at(time);
    if (time - now < commitAllowanceMs) runner.at(time + commitAllowanceMs);
  }
}

/** graphile-worker's delay before the retry of a job that failed its `attempts`-th time. */
const retryDelayMs = (attempts: number) => Math.exp(Math.min(attempts, 10)) * 1_000;
/** The database's one job schema, shared by every service (see above). */
export const jobsSchema = "ovation_jobs";

export interface Jobs {
  stop(): Promise<void>;
}

export async function startJobs(options: JobsOptions): Promise<Jobs> {
  const taskList: Record<string, Task> = {};
  for (const [name, handler] of Object.entries(options.tasks)) {
    taskList[name] = async (payload, helpers) => {
      await handler(payload, { key: helpers.job.key ?? undefined, attempts: helpers.job.attempts });
    };
  }
  const log = options.logger.child({ component: "jobs" });
  const concurrency = options.concurrency ?? jobDefaults.concurrency;
  // The pool's nudge (graphile-worker's own wake-up for a NOTIFY) is reached through its events.
  const events: WorkerEvents = new EventEmitter();
  let workerPool: WorkerPool | undefined;
  events.on("pool:create", ({ workerPool: created }) => {
    workerPool = created;
  });
  const due = new DueTimer(() => workerPool?.nudge(concurrency));
  // The schema first (graphile-worker's run finds nothing left to migrate), with the functions
  // that announce only due jobs.
  await prepareJobs(options);
  const pgPool =
    options.listener === undefined
      ? options.pool
      : listeningPool(options.pool, options.listener, () => workerPool?.nudge(concurrency));
  const runner: Runner = await run({
    pgPool,
    noPreparedStatements: options.preparedStatements === false,
    schema: jobsSchema,
    taskList,
    crontab: options.crontab ?? "",
    concurrency,
    pollInterval: options.pollIntervalMs ?? jobDefaults.pollIntervalMs,
    noHandleSignals: true,
    logger: workerLogger(options.logger),
    events,
  });
  localRunners.add(due);
  // A job that used its last attempt stays in the schema, failed, until someone retries it
  // (`./ov jobs failed`, `./ov jobs retry ID`): say so loudly, it will not run again on its own.
  runner.events.on("job:failed", ({ job, error }) => {
    if (job.attempts < job.max_attempts) {
      // Its retry is nobody else's news: wake up for it (and its slot's slack).
      due.at(Date.now() + retryDelayMs(job.attempts) + wakeGranularityMs);
      return;
    }
    log.error(
      { task: job.task_identifier, key: job.key, jobId: job.id, attempts: job.attempts, err: error },
      "job gave up after its last attempt: it stays failed until retried (./ov jobs failed)",
    );
  });
  return {
    async stop() {
      localRunners.delete(due);
      due.stop();
      await runner.stop();
    },
  };
}

/** graphile-worker's LISTEN statements: `LISTEN "jobs:insert"; LISTEN "worker:migrate";`. */
const listenStatementPattern = /^(listen|unlisten)\s+"([^"]+)"$/i;

/**
 * What graphile-worker 0.18 takes for its LISTEN connection: it asks `pgPool.connect(callback)`
 * (the callback form, which nothing else of it uses) for a client, LISTENs on it, listens for its
 * "notification" and "error" events, UNLISTENs and releases it when it stops. This client does
 * that through the process's shared LISTEN connection and holds no connection of its own.
 */
class ListeningClient extends EventEmitter {
  readonly #listener: SharedListener;
  readonly #restored: () => void;
  #subscription: ListenSubscription | undefined;

  constructor(listener: SharedListener, restored: () => void) {
    super();
    this.#listener = listener;
    this.#restored = restored;
  }

  async query(text: string): Promise<{ rows: never[]; rowCount: number }> {
    const statements = text
      .split(";")
      .map((statement) => statement.trim())
      .filter((statement) => statement !== "");
    const parsed = statements.map((statement) => listenStatementPattern.exec(statement));
    if (parsed.some((match) => match === null))
      throw new Error(`the jobs' LISTEN client runs only LISTEN and UNLISTEN, not: ${text}`);
    const channels = parsed
      .filter((match) => match![1]!.toLowerCase() === "listen")
      .map((match) => match![2]!);
    // graphile-worker sends all its LISTENs in one query, and its UNLISTENs in another.
    await this.release();
    if (channels.length > 0) {
      this.#subscription = await this.#listener.subscribe(channels, {
        notification: (channel, payload) => this.emit("notification", { channel, payload, processId: 0 }),
        // graphile-worker polls meanwhile; once back, look at once for what was announced to nobody.
        restored: this.#restored,
      });
    }
    return { rows: [], rowCount: 0 };
  }

  async release(): Promise<void> {
    const subscription = this.#subscription;
    this.#subscription = undefined;
    await subscription?.close();
  }
}

type ConnectCallback = (error: Error | undefined, client: ListeningClient, release: () => void) => void;

/**
 * `pool` for graphile-worker: its callback-form `connect` (its LISTEN connection, see
 * ListeningClient) goes to the shared listener; everything else (promise-form `connect`, `query`,
 * events) is the pool's own.
 */
function listeningPool(pool: pg.Pool, listener: SharedListener, restored: () => void): pg.Pool {
  const connect = (callback?: ConnectCallback) => {
    if (callback === undefined) return pool.connect();
    const client = new ListeningClient(listener, restored);
    setImmediate(() => callback(undefined, client, () => void client.release()));
    return undefined;
  };
  return new Proxy(pool, {
    get(target, property) {
      if (property === "connect") return connect;
      const value: unknown = Reflect.get(target, property, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

export interface FailedJob {
  id: string;
  task: string;
  key: string | null;
  attempts: number;
  lastError: string | null;
  payload: unknown;
  runAt: Date;
}

/** Jobs that used every attempt (and are not running it now): they never run again unless retried. */
export async function failedJobs(pool: pg.Pool, limit = 100): Promise<FailedJob[]> {
  const { rows } = await pool.query<{
    id: string;
    task_identifier: string;
    key: string | null;
    attempts: number;
    last_error: string | null;
    payload: unknown;
    run_at: Date;
  }>(
    `select j.id::text, t.identifier as task_identifier, j.key, j.attempts, j.last_error, j.payload, j.run_at
     from ${jobsSchema}._private_jobs j join ${jobsSchema}._private_tasks t on t.id = j.task_id
     where j.attempts >= j.max_attempts and j.locked_at is null order by j.id limit $1`,
    [limit],
  );
  return rows.map((row) => ({
    id: row.id,
    task: row.task_identifier,
    key: row.key,
    attempts: row.attempts,
    lastError: row.last_error,
    payload: row.payload,
    runAt: row.run_at,
  }));
}

/** Gives a failed job its attempts back and makes it due now; false when there is no such failed job. */
export async function retryJob(pool: pg.Pool, id: string): Promise<boolean> {
  if (!/^[1-9][0-9]{0,18}$/.test(id)) return false;
  const { rows } = await pool.query(
    `select j.id from ${jobsSchema}.jobs j where j.id = $1::bigint and j.attempts >= j.max_attempts and j.locked_at is null`,
    [id],
  );
  if (rows.length === 0) return false;
  await pool.query(
    `select ${jobsSchema}.reschedule_jobs(array[$1::bigint], run_at => now(), attempts => 0)`,
    [id],
  );
  return true;
}

/**
 * The failed-jobs gauge (`ovation_jobs_failed`), counted when /metrics is read, so an idle
 * process pays nothing for it. Registered once per process, on the database of `pool`.
 */
export function registerFailedJobsMetric(pool: pg.Pool): void {
  if (metricsRegistry.getSingleMetric(failedJobsMetricName) !== undefined) return;
  new Gauge({
    name: failedJobsMetricName,
    help: "Durable timers that used every attempt and will not run again unless retried (./ov jobs failed).",
    registers: [metricsRegistry],
    async collect() {
      const { rows } = await pool
        .query<{ n: number }>(
          `select count(*)::int as n from ${jobsSchema}.jobs where attempts >= max_attempts and locked_at is null`,
        )
        .catch(() => ({ rows: [] as { n: number }[] }));
      if (rows[0] !== undefined) this.set(rows[0].n);
    },
  });
}

const failedJobsMetricName = "ovation_jobs_failed";

/**
 * Creates or upgrades the job schema without running jobs: a replica that only schedules jobs
 * (an API-only replica) needs the schema as much as one that runs them.
 */
export async function prepareJobs(options: { pool: pg.Pool; logger: Logger }): Promise<void> {
  await runMigrations({ pgPool: options.pool, schema: jobsSchema, logger: workerLogger(options.logger) });
  await replaceJobFunctions(options.pool, options.logger);
}

/**
 * What patches/graphile-worker@0.18.0.patch leaves in each function it changes: markers in the
 * body and settings of the function. add_job and add_jobs announce only jobs due now (0052);
 * add_jobs and remove_job find jobs by key whatever the statistics say, add_jobs plans once per
 * session, and remove_job announces nothing (0054).
 */
const patchedFunctions: Record<string, { markers: readonly string[]; settings: readonly string[] }> = {
  add_jobs: {
    markers: ["Patched (ovation, decision 0052)", "Patched (ovation, decision 0054)"],
    settings: ["enable_seqscan=off", "plan_cache_mode=force_generic_plan"],
  },
  remove_job: { markers: ["Patched (ovation, decision 0054)"], settings: ["enable_seqscan=off"] },
};

/**
 * A job schema migrated before graphile-worker was patched has the functions as they shipped:
 * add_job and add_jobs send a NOTIFY for every job, remove_job one for every removal. The
 * package's migration 000020, patched to create or replace exactly those functions, is applied
 * again from the installed package. Under an advisory lock, so replicas starting together
 * apply it once.
 */
async function replaceJobFunctions(pool: pg.Pool, logger: Logger): Promise<void> {
  const client = await pool.connect();
  try {
    await client.query("begin");
    await client.query("select pg_advisory_xact_lock(hashtextextended($1, 0))", [`${jobsSchema}:functions`]);
    const { rows } = await client.query<{ name: string; source: string; settings: string[] | null }>(
      `select proname as name, prosrc as source, proconfig as settings from pg_proc
       where pronamespace = $1::regnamespace and proname = any($2::text[])`,
      [jobsSchema, Object.keys(patchedFunctions)],
    );
    const patched = ({ name, source, settings }: (typeof rows)[number]) =>
      patchedFunctions[name]!.markers.every((marker) => source.includes(marker)) &&
      patchedFunctions[name]!.settings.every((setting) => settings?.includes(setting));
    if (
      Object.keys(patchedFunctions).every((name) => rows.some((row) => row.name === name)) &&
      rows.every(patched)
    ) {
      await client.query("commit");
      return;
    }
    const migration = new URL("../sql/000020.sql", import.meta.resolve("graphile-worker"));
    const sql = (await readFile(migration, "utf8")).replaceAll(":GRAPHILE_WORKER_SCHEMA", jobsSchema);
    if (
      !Object.values(patchedFunctions).every(({ markers }) => markers.every((marker) => sql.includes(marker)))
    )
      throw new Error(`${migration.pathname} is not the patched one`);
    await client.query(sql);
    await client.query("commit");
    logger.info({ schema: jobsSchema }, "job functions replaced by graphile-worker's patched ones");
  } catch (error) {
    await client.query("rollback").catch(() => {});
    throw error;
  } finally {
    client.release();
  }
}

function workerLogger(logger: Logger): WorkerLogger {
  const log = logger.child({ component: "jobs" });
  return new WorkerLogger(() => (level, message, meta) => {
    const method = level === "error" ? "error" : level === "warning" ? "warn" : "debug";
    log[method]({ ...meta }, message);
  });
}

export interface JobSpec {
  task: string;
  payload: Record<string, unknown>;
  /** When to run it; now when absent. */
  runAt?: Date;
  /**
   * Names the job: scheduling the same key again replaces it (its time and payload). Keys are
   * database-wide: start them with the service's name ("wallet:hold:<id>").
   */
  key?: string;
  /** Attempts before the job gives up (graphile-worker backs off between them). */
  maxAttempts?: number;
}

/** Adds a job inside the caller's transaction: it exists only if that transaction commits. */
export async function scheduleJob(em: EntityManager, job: JobSpec): Promise<void> {
  if (job.runAt !== undefined) announceDue(job.runAt.getTime());
  await em.execute(
    `select ${jobsSchema}.add_job(identifier => ?, payload => ?::json, run_at => ?::timestamptz,
       max_attempts => ?::int, job_key => ?, job_key_mode => 'replace')`,
    [
      job.task,
      JSON.stringify(job.payload),
      // No time: graphile-worker takes the transaction's, so the job is due now, and announced.
      job.runAt?.toISOString() ?? null,
      job.maxAttempts ?? 25,
      job.key ?? null,
    ],
  );
}

/** Removes a job by its key inside the caller's transaction (a timer that is no longer needed). */
export function cancelJob(em: EntityManager, key: string): Promise<void> {
  return cancelJobs(em, [key]);
}

/** Removes jobs by their keys in one statement inside the caller's transaction. */
export async function cancelJobs(em: EntityManager, keys: readonly string[]): Promise<void> {
  if (keys.length === 0) return;
  await em.execute(`select count(${jobsSchema}.remove_job(k)) from jsonb_array_elements_text(?::jsonb) k`, [
    JSON.stringify(keys),
  ]);
}

/**
 * Adds many jobs in one statement inside the caller's transaction (graphile-worker's add_jobs):
 * a consumer scheduling a timer per event of a batch. Keys replace, as in scheduleJob.
 */
export async function scheduleJobs(em: EntityManager, jobs: readonly JobSpec[]): Promise<void> {
  if (jobs.length === 0) return;
  for (const job of jobs) if (job.runAt !== undefined) announceDue(job.runAt.getTime());
  await em.execute(
    `select count(*) from ${jobsSchema}.add_jobs(array(
       select json_populate_record(null::${jobsSchema}.job_spec, spec) from json_array_elements(?::json) spec))`,
    [
      JSON.stringify(
        jobs.map((job) => ({
          identifier: job.task,
          payload: job.payload,
          run_at: job.runAt?.toISOString() ?? null,
          max_attempts: job.maxAttempts ?? 25,
          job_key: job.key ?? null,
        })),
      ),
    ],
  );
}
