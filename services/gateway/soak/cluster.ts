// The cluster soak (issue 21's acceptance): a three-node JetStream cluster with R3 streams, two
// replicas of every service behind balancers (testkit startStack), and at once a gift storm
// through the gateways, a flash crowd at a shared code and a stream of orders, while the NATS
// node leading the GIFT stream is killed with SIGKILL and started again, and then one replica of
// every service is killed with SIGKILL and started again. Clients retry with their idempotency
// keys as a real client does (rest.ts). Afterwards every check in checks.ts must hold; the
// figures say what the run did and how fast it came back. `./ov soak cluster` runs the long
// version (cluster.soak.ts), `./ov test` a short one (test/cluster-soak.test.ts).
// The same soak runs on a Postgres that fails over (decision 0046): its primary killed during
// the loads, once or more (`postgresKillsAtSeconds`; test/pg-failover.test.ts, `./ov soak failover`).
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { connectionBudget } from "@ovation/config";
import { databaseClient, defaultDatabaseTimeouts } from "@ovation/db";
import { type RunningPgBouncer, startPgBouncer } from "@ovation/db/pgbouncer";
import { EventBus } from "@ovation/events";
import { serviceNames, testEnvironment } from "@ovation/testkit";
import { formatRate, freePort, percentile, startStack, unthrottledGateway } from "@ovation/testkit/bench";
import type pg from "pg";
import { type Check, type Outcomes, runChecks, settle } from "./checks.ts";
import {
  loseNatsNode,
  losePrimaries,
  loseReplicas,
  type NatsNodeLoss,
  type PrimaryLoss,
  type ReplicaLoss,
} from "./faults.ts";
import { flashCrowd, giftStorm, placeOrders, type SendRecord } from "./load.ts";
import { type Scene, setUpScene } from "./scene.ts";

export interface ClusterSoakOptions {
  /** Closed-loop senders of the gift storm, the hosts whose rooms they send to, and its length. */
  senders: number;
  hosts: number;
  stormSeconds: number;
  /** The flash campaign's slots, and a crowd of `crowd` users arriving over `crowdSeconds` from `crowdStartSeconds`. */
  slots: number;
  crowd: number;
  crowdStartSeconds: number;
  crowdSeconds: number;
  /** Orders placed evenly over the storm by `buyers`, on `products` products stocked `stock` units each. */
  orders: number;
  buyers: number;
  products: number;
  stock: number;
  /** NATS servers (default 3: a cluster, streams R3) and processes of every service (default 2). */
  natsNodes?: number;
  replicas?: number;
  /** When (s after the loads began) the GIFT stream leader's node is killed, and for how long (undefined: never). */
  natsKillAtSeconds?: number | undefined;
  natsDownSeconds?: number;
  /** When one replica of every service is killed (undefined: never), and how long until each is started again (undefined: never). */
  replicaKillAtSeconds?: number | undefined;
  replicaDownSeconds?: number | undefined;
  /**
   * Run on a Postgres formation (a primary and a synchronous standby) and kill its primary at
   * these times (s after the loads began); the killed node rejoins as a standby before the next.
   */
  postgresKillsAtSeconds?: readonly number[];
  /** DATABASE_POOL_MAX of every process; undefined: each service's budget (connectionBudget). */
  poolMax: number | undefined;
  /**
   * PgBouncer in transaction mode in front of Postgres, as the cluster profile runs (0043): each
   * service's pool of `connectionBudget` server connections shared by its replicas, LISTEN direct.
   * Not with a Postgres that fails over: PgBouncer 1.18 reaches one host.
   */
  pgBouncer?: boolean;
  /** How long the asynchronous work may take to catch up once the loads ended. */
  settleTimeoutSeconds: number;
  /** LOG_LEVEL of every service. */
  logLevel: string;
  /** Told what the soak is doing, as it goes. */
  progress?: (line: string) => void;
}

export interface ClusterSoakReport {
  checks: Check[];
  figures: string[];
  /** What the ledger audit printed. */
  audit: string[];
}

/** The saga's retries and JetStream's redeliveries at test speed (as the other fault tests). */
const fastRetries = { EVENTS_RETRY_BACKOFF_MS: "50,100,200", EVENTS_ACK_WAIT_MS: "1500" };
const connectionSampleMs = 250;
/** The issue's bound on how soon the services serve again after losing the Postgres primary. */
const servedAgainWithinMs = 30_000;

export async function runClusterSoak(options: ClusterSoakOptions): Promise<ClusterSoakReport> {
  const progress = options.progress ?? (() => {});
  const natsNodes = options.natsNodes ?? 3;
  const replicas = options.replicas ?? 2;
  const postgresKills = options.postgresKillsAtSeconds ?? [];
  const begun = performance.now();
  await using env = await testEnvironment({
    ...(natsNodes > 1 ? { natsCluster: natsNodes } : {}),
    postgresFormation: postgresKills.length > 0,
  });
  const database =
    env.postgresFormation === undefined ? "one Postgres" : "a Postgres primary with a synchronous standby";
  if (options.pgBouncer === true && env.postgresFormation !== undefined)
    throw new Error("PgBouncer 1.18 reaches one host: it cannot front a Postgres that fails over");
  await using pooler = options.pgBouncer === true ? await startSoakPgBouncer(env.databaseUrl) : undefined;
  progress(
    `${natsNodes} NATS nodes and ${database} up${pooler === undefined ? "" : `, PgBouncer on port ${pooler.port}`}; starting ${replicas} replicas of every service`,
  );
  await using stack = await startStack(env, {
    replicas,
    env: {
      ...unthrottledGateway,
      ...fastRetries,
      ...(options.poolMax === undefined ? {} : { DATABASE_POOL_MAX: String(options.poolMax) }),
      LOG_LEVEL: options.logLevel,
      CARD_FAILURE_RATE: "0.2",
      CARD_LATENCY_MS: "20",
      CARD_SEED: "soak",
    },
    serviceEnv: (service) => ({
      // The test kit's small default for in-process tests does not apply: each service its budget.
      ...(options.poolMax === undefined ? { DATABASE_POOL_MAX: String(budgetOf(service)) } : {}),
      ...(pooler === undefined
        ? {}
        : { DATABASE_URL: pooler.url(service), DATABASE_DIRECT_URL: env.databaseUrl }),
    }),
  });
  const startedMs = performance.now() - begun;
  const bus = await EventBus.connect({ url: env.natsUrl, prefix: env.prefix, name: "soak", ...env.natsOps });
  // To the primary of the moment: a failover ends it, and the checks open another.
  const openDb = async () => {
    const client = databaseClient(env.databaseUrl, { application_name: "soak" });
    client.on("error", () => {});
    await client.connect();
    return client;
  };
  let db = await openDb();
  let sampler: ReturnType<typeof sampleConnections> | undefined;
  try {
    const gateway = stack.url("gateway");
    const scene = await setUpScene(env, stack, db, options);
    progress(`stack up in ${seconds(startedMs)}, scene set; loads and faults for ${options.stormSeconds} s`);
    const idleConnections = await connectionsNow(db);
    sampler = sampleConnections(openDb, pooler);
    const t0 = performance.now();
    const at = (secondsAfter: number) => t0 + secondsAfter * 1000;
    // The storm outlasts its duration while a primary loss still waits for its first accepted
    // send within the bound, so "served again" is judged on sends, never on a storm that ended.
    const kills: number[] = [];
    const awaitingService = (records: readonly SendRecord[]) =>
      kills.length < postgresKills.length ||
      kills.some(
        (killedAt) =>
          performance.now() < killedAt + servedAgainWithinMs &&
          firstAcceptedAfter(records, killedAt) === undefined,
      );
    const [sends, redeems, orders, natsLoss, replicaLoss, primaryLosses] = await Promise.all([
      giftStorm(gateway, scene, options.stormSeconds * 1000, awaitingService),
      delay(at(options.crowdStartSeconds)).then(() =>
        flashCrowd(gateway, scene, options.crowdSeconds * 1000),
      ),
      placeOrders(gateway, scene, options.orders, options.stormSeconds * 800),
      options.natsKillAtSeconds === undefined
        ? undefined
        : loseNatsNode(env, bus, at(options.natsKillAtSeconds), (options.natsDownSeconds ?? 0) * 1000),
      options.replicaKillAtSeconds === undefined
        ? undefined
        : loseReplicas(
            stack,
            serviceNames().sort(),
            at(options.replicaKillAtSeconds),
            options.replicaDownSeconds === undefined ? undefined : options.replicaDownSeconds * 1000,
          ),
      losePrimaries(env, postgresKills.map(at), (killedAt) => kills.push(killedAt)),
    ]);
    const loadEndedAt = performance.now();
    const { connections, pooled } = await sampler.stop();
    progress(`loads done after ${seconds(loadEndedAt - t0)}; waiting for the work to settle`);
    if (primaryLosses.length > 0) {
      await db.end().catch(() => {});
      db = await openDb();
    }
    const settledMs = await settle(db, options.settleTimeoutSeconds * 1000);
    const { checks, audit } = await runChecks(db, env, gateway, scene, { sends, redeems, orders });
    checks.push(...primaryLosses.map((loss) => servedAgain(loss, sends)));
    const figures = [
      `stack: ${natsNodes === 1 ? "one NATS server" : `${natsNodes} NATS nodes (streams R${natsNodes})`}, ${database}, ${serviceNames().length} services × ${replicas} replicas${replicas > 1 ? " behind balancers" : ""}, DATABASE_POOL_MAX=${options.poolMax ?? "each service's budget"}${pooler === undefined ? "" : ", through PgBouncer (transaction mode, a pool per service of its budget)"}; started in ${seconds(startedMs)}`,
      ...storyOfLoads(options, scene, t0, { sends, redeems, orders }),
      ...(natsLoss === undefined || replicaLoss === undefined
        ? []
        : [ratesByPhase(sends, t0, natsLoss, replicaLoss)]),
      ...(natsLoss === undefined ? [] : [await storyOfNatsLoss(db, natsLoss, t0, sends)]),
      ...(replicaLoss === undefined ? [] : [storyOfReplicaLoss(replicaLoss, t0, sends)]),
      ...primaryLosses.map((loss) => storyOfPrimaryLoss(loss, t0, sends)),
      `Postgres connections to the soak's database (pg_stat_activity, ${stack.services.size} service processes): ${idleConnections} before the loads, at most ${Math.max(...connections)} under load (median ${percentile(connections, 0.5)}, ${connections.length} samples)` +
        (pooled.length === 0
          ? ""
          : `; of them PgBouncer's server connections (SHOW POOLS) at most ${Math.max(...pooled)}, the rest direct (one LISTEN connection per process)`),
      ...(await orderOutcomes(db)),
      `settled ${seconds(settledMs)} after the loads ended (every host credit, promotion credit, saga step and outbox row)`,
    ];
    return { checks, figures, audit };
  } finally {
    await sampler?.stop().catch(() => {});
    await db.end().catch(() => {});
    await bus.close();
  }
}

/** The first send that started after the primary died and was accepted: the stack served again. */
function firstAcceptedAfter(sends: readonly SendRecord[], time: number): number | undefined {
  const answered = sends
    .filter((send) => send.answer.status === 200 && send.answer.startedAt > time)
    .map((send) => send.answer.answeredAt);
  return answered.length === 0 ? undefined : Math.min(...answered);
}

function servedAgain(loss: PrimaryLoss, sends: Outcomes["sends"]): Check {
  const first = firstAcceptedAfter(sends, loss.killedAt);
  const after = first === undefined ? undefined : first - loss.killedAt;
  return {
    name: `served again within ${servedAgainWithinMs / 1000} s of losing the Postgres primary ${loss.node}, without a restart`,
    passed: after !== undefined && after <= servedAgainWithinMs,
    detail:
      after === undefined
        ? "no send started after the kill was accepted"
        : `the first send started after the kill was accepted ${seconds(after)} after it`,
  };
}

function storyOfPrimaryLoss(loss: PrimaryLoss, t0: number, sends: Outcomes["sends"]): string {
  const first = firstAcceptedAfter(sends, loss.killedAt);
  const refused = sends.filter(
    (send) =>
      send.answer.attempts > 1 &&
      send.answer.startedAt < loss.promotedAt + 5_000 &&
      send.answer.answeredAt > loss.killedAt,
  ).length;
  return `Postgres primary ${loss.node} SIGKILL at +${seconds(loss.killedAt - t0)}: ${loss.promoted} accepted writes ${seconds(loss.promotedAt - loss.killedAt)} later; the first send started after the kill was accepted ${first === undefined ? "never" : `${seconds(first - loss.killedAt)} after it`}; ${refused} sends around it were answered 503 first and retried with their key${loss.rejoinedAt === undefined ? "" : `; ${loss.node} rejoined as a standby ${seconds(loss.rejoinedAt - loss.killedAt)} after the kill`}`;
}

function storyOfLoads(options: ClusterSoakOptions, scene: Scene, t0: number, loads: Outcomes): string[] {
  const accepted = loads.sends.filter((send) => send.answer.status === 200);
  const latencies = accepted.map((send) => send.answer.answeredAt - send.answer.startedAt);
  const retried = (records: { answer: { attempts: number } }[]) =>
    records.filter((record) => record.answer.attempts > 1).length;
  const won = loads.redeems.filter((redeem) => redeem.answer.status === 200);
  const lastWin = Math.max(...won.map((redeem) => redeem.answer.answeredAt));
  const firstTry = Math.min(...loads.redeems.map((redeem) => redeem.answer.startedAt));
  // The storm may have outlasted its duration, waiting for a send after a primary loss.
  const stormSeconds = Math.max(
    options.stormSeconds,
    (Math.max(...loads.sends.map((s) => s.answer.answeredAt)) - t0) / 1000,
  );
  return [
    `gift storm: ${accepted.length.toLocaleString("en-US")} sends accepted by ${options.senders} senders into ${options.hosts} rooms in ${stormSeconds.toFixed(0)} s = ${formatRate(accepted.length / stormSeconds)} sends/s; p50 ${latencies.length === 0 ? "-" : percentile(latencies, 0.5).toFixed(0)} ms, p99 ${latencies.length === 0 ? "-" : percentile(latencies, 0.99).toFixed(0)} ms (retries included); ${retried(loads.sends)} sends needed a retry`,
    `flash: ${scene.crowdIds.length.toLocaleString("en-US")} users arriving over ${options.crowdSeconds.toFixed(0)} s for ${options.slots.toLocaleString("en-US")} slots: ${won.length.toLocaleString("en-US")} redemptions, the last slot taken ${seconds(lastWin - firstTry)} after the first try (+${seconds(lastWin - t0)}); ${retried(loads.redeems)} redeems needed a retry`,
    `orders: ${loads.orders.filter((order) => order.answer.status === 200).length} of ${options.orders} placed over ${(options.stormSeconds * 0.8).toFixed(0)} s; ${retried(loads.orders)} needed a retry`,
  ];
}

async function storyOfNatsLoss(
  db: pg.Client,
  loss: NatsNodeLoss,
  t0: number,
  sends: Outcomes["sends"],
): Promise<string> {
  // Debits commit with their event in the wallet's outbox whatever NATS does; what the loss
  // delays is the credit: the first one of a gift debited after the kill says when events flowed again.
  const { rows } = await db.query<{ after: number | null }>(
    `select extract(epoch from min(s.settled_at) - $1) * 1000 as after
     from wallet.gift_settlements s join wallet.transfers t on t.id = s.gift_transfer_id
     where t.created_at > $1`,
    [loss.killedAtWall],
  );
  const flowing = rows[0]?.after;
  return `NATS node ${loss.node} (leader of the GIFT stream) SIGKILL at +${seconds(loss.killedAt - t0)}: ${loss.newLeader} led the stream ${seconds(loss.electedAt - loss.killedAt)} later; the first credit of a gift sent after the kill came ${flowing == null ? "never" : seconds(Number(flowing))} after it; the node was back in the cluster ${seconds(loss.rejoinedAt - loss.killedAt)} after the kill; longest stretch without an accepted send: ${seconds(longestGap(sends, loss.killedAt, loss.rejoinedAt + 5_000))}`;
}

function storyOfReplicaLoss(loss: ReplicaLoss, t0: number, sends: Outcomes["sends"]): string {
  const restarts = [...loss.restartMs].map(([label, ms]) => `${label} ${seconds(ms)}`).join(", ");
  const stall = longestGap(sends, loss.killedAt, (loss.restartedAt ?? Number.POSITIVE_INFINITY) + 5_000);
  return `replicas SIGKILL at +${seconds(loss.killedAt - t0)}: ${loss.killed.join(", ")}; longest stretch without an accepted send: ${seconds(stall)}; ${restarts === "" ? "not restarted: the other replicas carried on alone" : `restarted, listening again after ${restarts}`}`;
}

/** Accepted sends per second before the faults, while the NATS node was away, and after the replicas died. */
function ratesByPhase(
  sends: Outcomes["sends"],
  t0: number,
  nats: NatsNodeLoss,
  replicas: ReplicaLoss,
): string {
  const stormEnd = Math.max(...sends.map((send) => send.answer.startedAt));
  const rate = (from: number, to: number) =>
    formatRate(
      sends.filter(
        (send) => send.answer.status === 200 && send.answer.answeredAt >= from && send.answer.answeredAt < to,
      ).length /
        ((to - from) / 1000),
    );
  const replicasBack = Math.min(replicas.restartedAt ?? stormEnd, stormEnd);
  const natsBack = Math.min(nats.rejoinedAt, replicas.killedAt);
  const between =
    natsBack < replicas.killedAt ? `, ${rate(natsBack, replicas.killedAt)} between the faults` : "";
  const after = replicasBack < stormEnd ? `, ${rate(replicasBack, stormEnd)} once they were back` : "";
  return `sends/s by phase: ${rate(t0, nats.killedAt)} before the faults, ${rate(nats.killedAt, natsBack)} while the NATS node was away${between}, ${rate(replicas.killedAt, replicasBack)} with one replica of each service dead${after}`;
}

async function orderOutcomes(db: pg.Client): Promise<string[]> {
  const { rows } = await db.query<{ status: number; reason: string; n: number }>(
    `select status, failure_reason as reason, count(*)::int as n from "order".orders group by 1, 2 order by 3 desc`,
  );
  const named = rows.map(
    (row) =>
      `${row.n} ${row.status === 3 ? "completed" : row.status === 4 ? `failed (${row.reason})` : `in status ${row.status}`}`,
  );
  return [`order outcomes: ${named.join(", ")}`];
}

/** The longest time within [from, until] in which the storm had no send accepted. */
function longestGap(sends: Outcomes["sends"], from: number, until: number): number {
  // Not past the storm's last send: after it, nobody is sending.
  const to = Math.min(until, Math.max(...sends.map((send) => send.answer.startedAt)));
  const times = sends
    .filter((send) => send.answer.status === 200)
    .map((send) => send.answer.answeredAt)
    .filter((time) => time > from && time < to)
    .sort((a, b) => a - b);
  let longest = 0;
  let previous = from;
  for (const time of [...times, to]) {
    longest = Math.max(longest, time - previous);
    previous = time;
  }
  return longest;
}

async function connectionsNow(db: pg.Client): Promise<number> {
  const { rows } = await db.query<{ n: number }>(
    "select count(*)::int as n from pg_stat_activity where datname = current_database() and application_name <> 'soak'",
  );
  return rows[0]!.n;
}

/**
 * Counts the stack's connections to its database every few hundred ms until stopped, each time
 * on a connection of its own: through a failover, samples the primary of the moment.
 */
function sampleConnections(
  open: () => Promise<pg.Client>,
  pooler: RunningPgBouncer | undefined,
): { stop(): Promise<{ connections: number[]; pooled: number[] }> } {
  const samples: number[] = [];
  const pooled: number[] = [];
  let running = true;
  const loop = (async () => {
    while (running) {
      const next = performance.now() + connectionSampleMs;
      const db = await open().catch(() => undefined);
      if (db !== undefined) {
        // While no node accepts writes there is nothing to count.
        const count = await connectionsNow(db).catch(() => undefined);
        if (count !== undefined) samples.push(count);
        await db.end().catch(() => {});
      }
      // PgBouncer's share: the server connections of its pools (SHOW POOLS).
      const fromPooler = await pooler?.serverConnections().catch(() => undefined);
      if (fromPooler !== undefined) pooled.push(fromPooler);
      await delay(next);
    }
  })();
  // Its failure is reported by stop(); until then it must not count as unhandled.
  loop.catch(() => {});
  return {
    async stop() {
      running = false;
      await loop;
      return { connections: samples, pooled };
    },
  };
}

const budgetOf = (service: string): number =>
  (connectionBudget as Record<string, number>)[service] ?? Math.min(...Object.values(connectionBudget));

/** The soak's own PgBouncer: a free port, files in a temporary directory removed with it. */
async function startSoakPgBouncer(directUrl: string): Promise<RunningPgBouncer> {
  const directory = await mkdtemp(path.join(tmpdir(), "ovation-soak-pgbouncer-"));
  try {
    const pooler = await startPgBouncer({
      directUrl,
      databases: serviceNames().map((schema) => ({
        schema,
        poolSize: budgetOf(schema),
        timeouts: defaultDatabaseTimeouts,
      })),
      directory,
      port: await freePort(),
    });
    const stop = async () => {
      await pooler.stop();
      await rm(directory, { recursive: true, force: true });
    };
    return { ...pooler, stop, [Symbol.asyncDispose]: stop };
  } catch (error) {
    await rm(directory, { recursive: true, force: true });
    throw error;
  }
}

const delay = (at: number) =>
  new Promise((resolve) => setTimeout(resolve, Math.max(0, at - performance.now())));
const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

/** Prints a soak's figures, audit and checks for a person; returns the exit code (1: a check failed). */
export function printSoakReport(title: string, report: ClusterSoakReport): number {
  console.log("\nfigures");
  for (const line of report.figures) console.log(`  ${line}`);
  console.log("\nledger audit (./ov ledger audit)");
  for (const line of report.audit) console.log(`  ${line}`);
  console.log("\nchecks");
  for (const check of report.checks)
    console.log(`  ${check.passed ? "ok  " : "FAIL"} ${check.name}: ${check.detail}`);
  const failed = report.checks.filter((check) => !check.passed).length;
  console.log(failed === 0 ? `\n${title} passed` : `\n${title} FAILED (${failed} checks)`);
  return failed === 0 ? 0 : 1;
}
