// The faults of the cluster soak, each at a set time after the loads started: the NATS node
// that leads the GIFT stream killed with SIGKILL and started again on its store, and one replica
// of every service killed with SIGKILL and started again on its port. Each records when things
// happened (performance.now(), and the wall clock where the database's times are compared). With
// a Postgres formation (decision 0046), its primary is killed and the standby promoted.
import type { EventBus } from "@ovation/events";
import { type TestEnvironment, waitFor } from "@ovation/testkit";
import type { Stack } from "@ovation/testkit/bench";

export interface NatsNodeLoss {
  node: string;
  killedAt: number;
  killedAtWall: Date;
  /** When the GIFT stream answered with another leader. */
  electedAt: number;
  newLeader: string;
  /** When the node had been started again and rejoined the cluster. */
  rejoinedAt: number;
}

export interface ReplicaLoss {
  /** The replicas killed, labelled as `./ov up` names them ("gift-2"). */
  killed: string[];
  killedAt: number;
  /** How long each took from its restart to listening again, by label (none when not restarted). */
  restartMs: Map<string, number>;
  /** When the last of them listened again; undefined when they stay down. */
  restartedAt: number | undefined;
}

const sleepUntil = (at: number) =>
  new Promise((resolve) => setTimeout(resolve, Math.max(0, at - performance.now())));
/** An election takes 5–7 s here (0042); on a machine this busy, allow far more. */
const electionTimeoutMs = 60_000;

export async function loseNatsNode(
  env: TestEnvironment,
  bus: EventBus,
  at: number,
  downMs: number,
): Promise<NatsNodeLoss> {
  const cluster = env.natsCluster;
  if (cluster === undefined) throw new Error("the soak needs a JetStream cluster");
  await sleepUntil(at);
  const stream = bus.names.stream("GIFT");
  const node = await waitFor(
    async () => (await bus.jsm.streams.info(stream).catch(() => undefined))?.cluster?.leader,
    { what: "the GIFT stream's leader" },
  );
  // JetStream announces each election; the first after the kill names the new leader.
  const elections = bus.connection.subscribe(`$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED.${stream}`, {
    timeout: electionTimeoutMs,
  });
  const elected = (async () => {
    for await (const message of elections) {
      const { leader } = message.json<{ leader: string }>();
      if (leader !== node) return { leader, at: performance.now() };
    }
    throw new Error(`no new leader of the GIFT stream within ${electionTimeoutMs} ms`);
  })();
  // Awaited below; a failure before then must not go unhandled.
  elected.catch(() => {});
  await bus.connection.flush();
  const killedAt = performance.now();
  const killedAtWall = new Date();
  try {
    await cluster.kill(node);
    // The advisory is lost when it goes out while this connection moves off the killed node
    // (core NATS keeps nothing): then the stream's own answer shows the new leader, polled.
    const polled = waitFor(
      async () => {
        const leader = (await bus.jsm.streams.info(stream).catch(() => undefined))?.cluster?.leader;
        return leader !== undefined && leader !== node ? { leader, at: performance.now() } : undefined;
      },
      { timeoutMs: electionTimeoutMs, intervalMs: 100, what: "a new leader of the GIFT stream" },
    );
    polled.catch(() => {});
    await sleepUntil(killedAt + downMs);
    await cluster.restart(node);
    const rejoinedAt = performance.now();
    const { leader: newLeader, at: electedAt } = await Promise.any([elected, polled]);
    return { node, killedAt, killedAtWall, electedAt, newLeader, rejoinedAt };
  } finally {
    elections.unsubscribe();
  }
}

/**
 * Kills one replica of every service at once, the replicas taken in turn (wallet-1, gift-2, …)
 * so that every path through the stack loses a part; restarts them after `downMs`, or leaves
 * the other replicas to carry on alone when it is undefined.
 */
export async function loseReplicas(
  stack: Stack,
  names: readonly string[],
  at: number,
  downMs: number | undefined,
): Promise<ReplicaLoss> {
  await sleepUntil(at);
  const victims = names.map((name, i) => ({ name, replica: i % stack.replicas }));
  const label = (victim: { name: string; replica: number }) => `${victim.name}-${victim.replica + 1}`;
  const killedAt = performance.now();
  await Promise.all(victims.map((victim) => stack.service(victim.name, victim.replica).stop("SIGKILL")));
  const restartMs = new Map<string, number>();
  if (downMs === undefined)
    return { killed: victims.map(label), killedAt, restartMs, restartedAt: undefined };
  await sleepUntil(killedAt + downMs);
  await Promise.all(
    victims.map(async (victim) => {
      const begun = performance.now();
      await stack.restart(victim.name, victim.replica);
      restartMs.set(label(victim), performance.now() - begun);
    }),
  );
  return { killed: victims.map(label), killedAt, restartMs, restartedAt: performance.now() };
}

export interface PrimaryLoss {
  /** The Postgres node that was primary and was killed ("node_1"). */
  node: string;
  killedAt: number;
  /** When the monitor had promoted the standby and it accepted writes. */
  promotedAt: number;
  promoted: string;
  /** When the killed node was running again as the new primary's standby (before the next kill only). */
  rejoinedAt: number | undefined;
}

/** A failover takes 6–8 s here (0046); a busy machine gets far more. */
const failoverTimeoutMs = 60_000;

/**
 * At each of `at`, kills the node that is the formation's primary then (its keeper and Postgres,
 * with SIGKILL) and waits until the standby is promoted and accepts writes; before a next kill,
 * starts the killed node again, which rejoins as the new primary's standby. After the last kill
 * the new primary carries on alone.
 */
export async function losePrimaries(
  env: TestEnvironment,
  at: readonly number[],
  /** Told the moment each primary is killed. */
  killed: (killedAt: number) => void = () => {},
): Promise<PrimaryLoss[]> {
  if (at.length === 0) return [];
  const formation = env.postgresFormation;
  if (formation === undefined) throw new Error("the soak needs a Postgres formation");
  const losses: PrimaryLoss[] = [];
  for (const [index, time] of at.entries()) {
    await sleepUntil(time);
    const primary = await formation.primary();
    const killedAt = performance.now();
    await formation.kill(primary);
    killed(killedAt);
    const promoted = await formation.promotedAfter(primary, failoverTimeoutMs);
    const promotedAt = performance.now();
    let rejoinedAt: number | undefined;
    if (index < at.length - 1) {
      await formation.start(primary, failoverTimeoutMs);
      rejoinedAt = performance.now();
    }
    losses.push({ node: primary.name, killedAt, promotedAt, promoted: promoted.name, rejoinedAt });
  }
  return losses;
}
