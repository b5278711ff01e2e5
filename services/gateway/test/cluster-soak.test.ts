// The short cluster soak (soak/cluster.ts; `./ov soak cluster` runs the long one): a three-node
// JetStream cluster with R3 streams and two replicas of every service, a gift storm, a 300-slot
// flash crowd and 60 orders through the balanced gateways, while the GIFT stream leader's node
// is killed and started again and then one replica of every service is killed with SIGKILL and
// started again. Every accepted send must be debited and credited once, exactly 300 winners
// credited once, every order final with its stock and coins accounted for, the ledger audit
// clean and no dead letter. The stack reaches Postgres through PgBouncer, as the cluster profile
// does. The figures (sends/s, connections, recovery) are printed.
import { describe, expect, it } from "vitest";
import { runClusterSoak } from "../soak/cluster.ts";

describe("the cluster soak, short", () => {
  it("loses no coin, slot, order or unit through a NATS node loss and a killed replica of every service", async () => {
    const report = await runClusterSoak({
      senders: 16,
      hosts: 2,
      stormSeconds: 18,
      slots: 300,
      crowd: 450,
      crowdStartSeconds: 1,
      crowdSeconds: 12,
      orders: 60,
      buyers: 30,
      products: 3,
      stock: 24,
      natsKillAtSeconds: 3,
      natsDownSeconds: 4,
      replicaKillAtSeconds: 9,
      // Not started again: the other replicas carry on alone (the long soak restarts them).
      replicaDownSeconds: undefined,
      // As the cluster profile runs: PgBouncer in transaction mode, each service's pool of its
      // budget shared by its two replicas, LISTEN direct (0043); the connections are printed.
      poolMax: undefined,
      pgBouncer: true,
      settleTimeoutSeconds: 90,
      logLevel: process.env.TEST_LOG_LEVEL ?? "silent",
    });
    console.log(["cluster soak (short):", ...report.figures].join("\n  "));
    expect(report.checks.filter((check) => !check.passed)).toEqual([]);
  }, 240_000);
});
