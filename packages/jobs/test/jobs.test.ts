// Proves what durable timers promise, against the real Postgres: a job exists only if the
// transaction that scheduled it commits; it runs at its time, once, even with two replicas
// polling; it survives a restart of the only replica; and scheduling a key again replaces it.
import { AsyncLocalStorage } from "node:async_hooks";
import { readFile } from "node:fs/promises";
import { type Database, Migration, nativePool, openDatabase, SharedListener } from "@ovation/db";
import { metricsRegistry } from "@ovation/server";
import { listenToChannel, type TestEnvironment, testEnvironment, waitFor } from "@ovation/testkit";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { jobsCommand } from "../src/cli.ts";
import {
  cancelJobs,
  failedJobs,
  type Jobs,
  jobsSchema,
  prepareJobs,
  registerFailedJobsMetric,
  scheduleJob,
  scheduleJobs,
  startJobs,
} from "../src/index.ts";

class Nothing extends Migration {
  override async up() {
    this.addSql("select 1");
  }
}

const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? "silent" });
let env: TestEnvironment;
let orm: Database;

beforeAll(async () => {
  env = await testEnvironment();
  orm = await openDatabase({
    url: env.databaseUrl,
    schema: "jobs_app",
    entities: [],
    migrations: [{ name: "0001", class: Nothing }],
  });
});

afterAll(async () => {
  await orm?.close();
  await env?.[Symbol.asyncDispose]();
});

function recorder() {
  const runs: { name: string; at: number }[] = [];
  return {
    runs,
    tasks: {
      remember: async (payload: unknown) => {
        runs.push({ name: (payload as { name: string }).name, at: Date.now() });
      },
    },
  };
}

const start = async (tasks: Record<string, (payload: unknown) => Promise<void>>): Promise<Jobs> =>
  startJobs({ pool: await nativePool(orm), tasks, logger, pollIntervalMs: 100 });

describe("durable timers", () => {
  it("runs a job scheduled in a committed transaction at its time, and never one whose transaction rolled back", async () => {
    const { runs, tasks } = recorder();
    const jobs = await start(tasks);
    try {
      const runAt = new Date(Date.now() + 500);
      await expect(
        orm.em.fork().transactional(async (em) => {
          await scheduleJob(em, { task: "remember", payload: { name: "rolled-back" }, runAt });
          throw new Error("the state change failed");
        }),
      ).rejects.toThrow("the state change failed");
      await orm.em
        .fork()
        .transactional((em) => scheduleJob(em, { task: "remember", payload: { name: "committed" }, runAt }));
      await waitFor(() => runs.length > 0, { what: "the committed job" });
      expect(runs[0]!.at).toBeGreaterThanOrEqual(runAt.getTime());
      // The rolled-back job was never stored, so no worker can ever find it.
      const stored = await orm.em
        .fork()
        .execute(`select 1 from ${jobsSchema}._private_jobs where payload->>'name' = 'rolled-back'`);
      expect(stored).toEqual([]);
      expect(runs.map((run) => run.name)).toEqual(["committed"]);
    } finally {
      await jobs.stop();
    }
  });

  it("wakes at the time of a job it scheduled for later, with a poll of a minute (0035)", async () => {
    const { runs, tasks } = recorder();
    const jobs = await startJobs({ pool: await nativePool(orm), tasks, logger, pollIntervalMs: 60_000 });
    try {
      // Scheduled twice under one key: the second (a replacement) sends graphile-worker no NOTIFY.
      for (const delayMs of [5_000, 700]) {
        const runAt = new Date(Date.now() + delayMs);
        await orm.em
          .fork()
          .transactional((em) =>
            scheduleJob(em, { task: "remember", payload: { name: "woken" }, runAt, key: "jobs-test:woken" }),
          );
      }
      const runAt = Date.now() + 700;
      await waitFor(() => runs.length > 0, { timeoutMs: 5_000, what: "the job at its time" });
      expect(runs[0]!.at - runAt).toBeLessThan(500);
    } finally {
      await jobs.stop();
    }
  });

  it("hears jobs due now on the process's shared LISTEN connection, holding no pool connection for it, also after it was killed", async () => {
    const { runs, tasks } = recorder();
    const applicationName = "jobs-test-listen";
    const listener = new SharedListener(env.databaseUrl, { applicationName });
    const pool = await nativePool(orm);
    // A poll of a minute: only graphile-worker's NOTIFY, through the stand-in client, runs a job at once.
    const jobs = await startJobs({
      pool,
      tasks,
      logger,
      pollIntervalMs: 60_000,
      listener,
      preparedStatements: false,
    });
    const listening = async () =>
      (
        await pool.query<{ application_name: string; pid: number }>(
          `select application_name, pid from pg_stat_activity
           where datname = current_database() and query ilike 'listen%'`,
        )
      ).rows;
    const runNow = async (name: string) => {
      await orm.em.fork().transactional((em) => scheduleJob(em, { task: "remember", payload: { name } }));
      await waitFor(() => runs.some((run) => run.name === name), { timeoutMs: 5_000, what: `job ${name}` });
    };
    try {
      await waitFor(() => listener.connected, { what: "the shared LISTEN connection" });
      await runNow("first");
      const before = await listening();
      expect(before.map((row) => row.application_name)).toEqual([applicationName]);

      await pool.query("select pg_terminate_backend($1)", [before[0]!.pid]);
      await waitFor(async () => listener.connections === 2 && listener.connected, {
        what: "a new connection",
      });
      await waitFor(async () => (await listening()).length === 1, { what: "LISTEN again" });
      await runNow("after the kill");
      expect((await listening()).map((row) => row.application_name)).toEqual([applicationName]);
    } finally {
      await jobs.stop();
    }
    // The runner's stop released its stand-in, the last subscriber: the connection is closed.
    expect(listener.connected).toBe(false);
  });

  it("runs a job it woke up for outside the async context of the transaction that scheduled it", async () => {
    // MikroORM finds "the current entity manager" through AsyncLocalStorage: a handler run inside
    // the scheduling transaction's context would fork that (finished, maybe another database's)
    // transaction instead of its own service's. Seen as a PK settlement connecting to a dropped
    // test database.
    const caller = new AsyncLocalStorage<string>();
    const seen: (string | undefined)[] = [];
    const jobs = await startJobs({
      pool: await nativePool(orm),
      tasks: {
        where: async () => {
          seen.push(caller.getStore());
        },
      },
      logger,
      pollIntervalMs: 60_000,
    });
    try {
      await caller.run("the scheduling request", () =>
        orm.em
          .fork()
          .transactional((em) =>
            scheduleJob(em, { task: "where", payload: {}, runAt: new Date(Date.now() + 300) }),
          ),
      );
      await waitFor(() => seen.length > 0, { timeoutMs: 5_000, what: "the job at its time" });
      expect(seen).toEqual([undefined]);
    } finally {
      await jobs.stop();
    }
  });

  it("runs each job once with two replicas taking jobs", async () => {
    const { runs, tasks } = recorder();
    const [a, b] = [await start(tasks), await start(tasks)];
    try {
      await orm.em.fork().transactional(async (em) => {
        for (let i = 0; i < 40; i++) {
          await scheduleJob(em, {
            task: "remember",
            payload: { name: `job-${i}` },
            key: `once-${i}`,
          });
        }
      });
      await waitFor(() => runs.length >= 40, { what: "every job" });
      expect(new Set(runs.map((run) => run.name)).size).toBe(40);
      expect(runs).toHaveLength(40);
    } finally {
      await a.stop();
      await b.stop();
    }
  });

  it("keeps a runner working when another runner in the same process stops", async () => {
    const { runs, tasks } = recorder();
    const [a, b] = [await start(tasks), await start(tasks)];
    try {
      await a.stop();
      await orm.em.fork().transactional(async (em) => {
        await scheduleJob(em, { task: "remember", payload: { name: "after-a-stopped" } });
      });
      await waitFor(() => runs.length === 1, { what: "the job run by the runner still up" });
    } finally {
      await b.stop();
    }
  });

  it("lets each service's runner take only its own tasks from the shared job schema", async () => {
    const { runs, tasks } = recorder();
    const other = await start({ "other-service-task": tasks.remember });
    try {
      await orm.em.fork().transactional(async (em) => {
        await scheduleJob(em, { task: "remember", payload: { name: "not-yours" }, key: "mine" });
        await scheduleJob(em, { task: "other-service-task", payload: { name: "yours" } });
      });
      await waitFor(() => runs.length === 1, { what: "the other service's own job" });
      const [mine] = await orm.em
        .fork()
        .execute<{ attempts: number; locked: boolean }[]>(
          `select attempts, locked_at is not null as locked from ${jobsSchema}._private_jobs where key = 'mine'`,
        );
      expect(runs.map((run) => run.name)).toEqual(["yours"]);
      expect(mine).toEqual({ attempts: 0, locked: false });
    } finally {
      await other.stop();
    }
    const { runs: ownRuns, tasks: ownTasks } = recorder();
    const own = await start(ownTasks);
    try {
      await waitFor(() => ownRuns.length === 1, { what: "the job its own service runs" });
      expect(ownRuns.map((run) => run.name)).toEqual(["not-yours"]);
    } finally {
      await own.stop();
    }
  });

  it("runs a job whose time came while no replica was up, and replaces a job scheduled again by key", async () => {
    const { runs, tasks } = recorder();
    await orm.em.fork().transactional(async (em) => {
      await scheduleJob(em, {
        task: "remember",
        payload: { name: "first" },
        key: "the-end",
        runAt: new Date(Date.now() + 200),
      });
      await scheduleJob(em, {
        task: "remember",
        payload: { name: "moved" },
        key: "the-end",
        runAt: new Date(Date.now() + 300),
      });
    });
    // No worker runs while the job falls due.
    await waitFor(async () => {
      const [row] = await orm.em
        .fork()
        .execute<{ due: boolean }[]>(
          `select run_at <= now() as due from ${jobsSchema}._private_jobs where key = 'the-end'`,
        );
      return row?.due === true;
    });
    const jobs = await start(tasks);
    try {
      await waitFor(() => runs.length > 0, { what: "the job after the restart" });
      // The job's row goes once its handler has returned, a moment after it recorded the run.
      await waitFor(
        async () =>
          (await orm.em.fork().execute(`select 1 from ${jobsSchema}._private_jobs where key = 'the-end'`))
            .length === 0,
        { what: "the finished job to be removed" },
      );
      expect(runs.map((run) => run.name)).toEqual(["moved"]);
    } finally {
      await jobs.stop();
    }
  });

  it("keeps a job that used its last attempt visible (list, metric, command) and runs it again when retried", async () => {
    const pool = await nativePool(orm);
    let fail = true;
    const ran: string[] = [];
    const jobs = await start({
      fragile: async (payload) => {
        ran.push((payload as { name: string }).name);
        if (fail) throw new Error("the battle cannot be settled yet");
      },
    });
    try {
      await orm.em
        .fork()
        .transactional((em) =>
          scheduleJob(em, { task: "fragile", payload: { name: "settle" }, key: "fragile-1", maxAttempts: 1 }),
        );
      const [failed] = await waitFor(
        async () => {
          const list = await failedJobs(pool);
          return list.some((job) => job.key === "fragile-1")
            ? list.filter((job) => job.key === "fragile-1")
            : false;
        },
        { what: "the job to give up" },
      );
      expect(failed).toMatchObject({ task: "fragile", attempts: 1, payload: { name: "settle" } });
      expect(failed!.lastError).toContain("the battle cannot be settled yet");
      registerFailedJobsMetric(pool);
      expect(await metricsRegistry.getSingleMetricAsString("ovation_jobs_failed")).toMatch(
        /ovation_jobs_failed 1/,
      );

      const listed = await capture(() => jobsCommand(["failed"], env.databaseUrl));
      expect(listed.code).toBe(0);
      expect(listed.out).toContain('"key":"fragile-1"');
      fail = false;
      expect((await capture(() => jobsCommand(["retry", failed!.id], env.databaseUrl))).code).toBe(0);
      await waitFor(() => ran.length === 2, { what: "the retried job to run" });
      expect(await failedJobs(pool)).toEqual([]);
      expect(ran).toEqual(["settle", "settle"]);
      expect((await capture(() => jobsCommand(["retry", failed!.id], env.databaseUrl))).code).toBe(1);
      expect((await capture(() => jobsCommand(["retry"], env.databaseUrl))).code).toBe(2);
    } finally {
      await jobs.stop();
    }
  });
});

describe("announcing jobs (0052, 0054)", () => {
  /** graphile-worker's announcements of new jobs. */
  const jobsInsertListener = () => listenToChannel(env.databaseUrl, "jobs:insert");
  /** Schedules jobs of a task no runner knows, so they only wait until they are cancelled. */
  const schedule = (jobs: { key: string; runAt?: Date }[]) =>
    orm.em.fork().transactional(async (em) => {
      for (const job of jobs) await scheduleJob(em, { task: "nobody-runs-this", payload: {}, ...job });
    });
  const inAnHour = () => new Date(Date.now() + 3_600_000);

  it("announces a job due now, and not one due later, alone or in a batch", async () => {
    await prepareJobs({ pool: await nativePool(orm), logger });
    const listener = await jobsInsertListener();
    try {
      await schedule([{ key: "announce-later", runAt: inAnHour() }]);
      await orm.em.fork().transactional((em) =>
        scheduleJobs(em, [
          { task: "nobody-runs-this", payload: {}, key: "announce-batch-1", runAt: inAnHour() },
          { task: "nobody-runs-this", payload: {}, key: "announce-batch-2", runAt: inAnHour() },
        ]),
      );
      expect(await listener.settle()).toEqual([]);
      await schedule([{ key: "announce-now" }]);
      await orm.em.fork().transactional((em) =>
        scheduleJobs(em, [
          { task: "nobody-runs-this", payload: {}, key: "announce-batch-3", runAt: inAnHour() },
          { task: "nobody-runs-this", payload: {}, key: "announce-batch-4" },
        ]),
      );
      expect(await listener.settle()).toHaveLength(2);
    } finally {
      await listener.stop();
      await orm.em
        .fork()
        .transactional((em) =>
          cancelJobs(em, [
            "announce-later",
            "announce-now",
            ...[1, 2, 3, 4].map((n) => `announce-batch-${n}`),
          ]),
        );
    }
  });

  it("announces nothing when a job is removed (0054)", async () => {
    await prepareJobs({ pool: await nativePool(orm), logger });
    await schedule([{ key: "removed-quietly", runAt: inAnHour() }]);
    const listener = await jobsInsertListener();
    try {
      await orm.em.fork().transactional((em) => cancelJobs(em, ["removed-quietly"]));
      expect(await listener.settle()).toEqual([]);
      const left = await orm.em
        .fork()
        .execute(`select 1 from ${jobsSchema}._private_jobs where key = 'removed-quietly'`);
      expect(left).toEqual([]);
    } finally {
      await listener.stop();
    }
  });

  it("finds jobs by key however few there were when its session planned it (0054)", async () => {
    const pool = await nativePool(orm);
    await prepareJobs({ pool, logger });
    // A session of its own: PL/pgSQL keeps the plans it makes on a connection's first calls.
    const client = await pool.connect();
    // The transaction's own counters: a sequential scan would read every job waiting.
    const scans = async () =>
      Number(
        (
          await client.query<{ seq_scan: string }>(
            `select seq_scan from pg_stat_xact_user_tables where relid = '${jobsSchema}._private_jobs'::regclass`,
          )
        ).rows[0]!.seq_scan,
      );
    const addAndRemove = async (key: string) => {
      await client.query(
        `select ${jobsSchema}.add_job('nobody-runs-this', '{}'::json, run_at => now() + interval '1 hour', job_key => $1)`,
        [key],
      );
      await client.query(`select ${jobsSchema}.remove_job($1)`, [key]);
    };
    try {
      await client.query("begin");
      // The first calls make the plans the session keeps (PL/pgSQL tries custom plans first,
      // then keeps a generic one): the calls after them must find their jobs by key.
      for (let n = 0; n < 6; n++) await addAndRemove(`planning-${n}`);
      const before = await scans();
      for (let n = 0; n < 8; n++) await addAndRemove(`planned-${n}`);
      expect((await scans()) - before).toBe(0);
      // And add_jobs plans its statements once per session, not on every call.
      const { rows } = await client.query<{ settings: string[] }>(
        `select proconfig as settings from pg_proc where pronamespace = $1::regnamespace and proname = 'add_jobs'`,
        [jobsSchema],
      );
      expect(rows[0]!.settings).toContain("plan_cache_mode=force_generic_plan");
    } finally {
      await client.query("rollback");
      client.release();
    }
  });

  it("replaces the functions of a job schema created before the patch, which announced every job", async () => {
    const pool = await nativePool(orm);
    await prepareJobs({ pool, logger });
    // graphile-worker's add_jobs as it shipped: its NOTIFY unconditional.
    const { rows } = await pool.query<{ definition: string }>(
      `select pg_get_functiondef(p.oid) as definition from pg_proc p
       where p.pronamespace = $1::regnamespace and p.proname = 'add_jobs'`,
      [jobsSchema],
    );
    const shipped = rows[0]!.definition
      .replaceAll(/ *-- Patched \(ovation[^\n]*\n[^\n]*\n/g, "")
      .replace(
        /if exists \(select 1 from unnest\(specs\) spec where coalesce\(spec\.run_at, now\(\)\) <= clock_timestamp\(\)\) then\s*(perform pg_notify\([^;]*;)\s*end if;/,
        "$1",
      );
    expect(shipped).not.toContain("Patched (ovation");
    expect(shipped).not.toContain("if exists (select 1 from unnest(specs) spec");
    await pool.query(shipped);
    // remove_job as migration 000018 made it: a NOTIFY for every removal.
    const migration18 = await readFile(
      new URL("../sql/000018.sql", import.meta.resolve("graphile-worker")),
      "utf8",
    );
    const shippedRemove = /CREATE OR REPLACE FUNCTION :GRAPHILE_WORKER_SCHEMA\.remove_job\(.*?\n\$\$;/s.exec(
      migration18,
    )![0];
    expect(shippedRemove).toContain("pg_notify");
    await pool.query(shippedRemove.replaceAll(":GRAPHILE_WORKER_SCHEMA", jobsSchema));
    const listener = await jobsInsertListener();
    try {
      await schedule([{ key: "shipped-later", runAt: inAnHour() }]);
      await orm.em.fork().transactional((em) => cancelJobs(em, ["shipped-later"]));
      // The shipped add_jobs announced the job due later, and remove_job its removal.
      expect(await listener.settle()).toHaveLength(2);
      await prepareJobs({ pool, logger });
      await schedule([{ key: "patched-later", runAt: inAnHour() }]);
      await orm.em.fork().transactional((em) => cancelJobs(em, ["patched-later"]));
      expect(await listener.settle()).toHaveLength(2);
    } finally {
      await listener.stop();
      await orm.em.fork().transactional((em) => cancelJobs(em, ["shipped-later", "patched-later"]));
    }
  });
});

/** Runs a command, returning its exit code and what it printed. */
async function capture(command: () => Promise<number>): Promise<{ code: number; out: string }> {
  const lines: string[] = [];
  const log = console.log;
  const error = console.error;
  console.log = (...args: unknown[]) => lines.push(args.join(" "));
  console.error = (...args: unknown[]) => lines.push(args.join(" "));
  try {
    return { code: await command(), out: lines.join("\n") };
  } finally {
    console.log = log;
    console.error = error;
  }
}
