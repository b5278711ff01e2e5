// Postgres failover (issue 21's acceptance; decision 0046): every service on a pg_auto_failover
// formation (a primary and its synchronous standby, reached through a multi-host URL with
// target_session_attrs=read-write), a gift storm, a flash crowd and orders through the gateway,
// and the primary killed with SIGKILL mid-storm. Calls in flight answer 503 and their retries
// with the same idempotency key succeed; afterwards every send answered 200 is debited and
// credited once, the campaign and the orders add up, the ledger audit is clean, no dead letter,
// and the services served again within 30 s without a restart (the soak's checks).
// `./ov soak failover` runs a longer one with two failovers.
import { describe, expect, it } from "vitest";
import { runClusterSoak } from "../soak/cluster.ts";

describe("a Postgres failover under load", () => {
  it("loses no acknowledged send, slot or order when the primary dies, and serves again on its own", async () => {
    const report = await runClusterSoak({
      natsNodes: 1,
      replicas: 1,
      senders: 8,
      hosts: 2,
      stormSeconds: 16,
      slots: 100,
      crowd: 150,
      crowdStartSeconds: 1,
      crowdSeconds: 10,
      orders: 20,
      buyers: 10,
      products: 2,
      stock: 12,
      postgresKillsAtSeconds: [4],
      poolMax: 3,
      settleTimeoutSeconds: 90,
      logLevel: process.env.TEST_LOG_LEVEL ?? "silent",
    });
    console.log(["Postgres failover:", ...report.figures].join("\n  "));
    expect(report.checks.filter((check) => !check.passed)).toEqual([]);
    expect(report.checks.map((check) => check.name)).toContain(
      "served again within 30 s of losing the Postgres primary node_1, without a restart",
    );
  }, 240_000);
});
