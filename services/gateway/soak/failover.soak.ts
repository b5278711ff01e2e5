// `./ov soak failover`: every service on a Postgres that fails over (a pg_auto_failover primary
// and synchronous standby of the soak's own, decision 0046), a gift storm, a flash crowd and
// orders through the gateway, and the primary killed twice: the first victim rejoins as a
// standby and is promoted again when the second primary dies. Prints what it did, its figures,
// the ledger audit and every check; exits 1 when a check failed. Needs nats-server and
// pg_autoctl (Debian's postgresql-15-auto-failover) on PATH.
//
// Options: --seconds N (the storm, default 90; the kills at a sixth and two thirds of it),
//          --senders N (default 16), --replicas N (processes of every service, default 1),
//          --pool-max N (DATABASE_POOL_MAX per process, default 4).
import { parseArgs } from "node:util";
import { printSoakReport, runClusterSoak } from "./cluster.ts";

const { values } = parseArgs({
  options: {
    seconds: { type: "string", default: "90" },
    senders: { type: "string", default: "16" },
    replicas: { type: "string", default: "1" },
    "pool-max": { type: "string", default: "4" },
  },
});
const stormSeconds = Number(values.seconds);
if (!(stormSeconds >= 60)) {
  console.error("--seconds must be at least 60: a failover and a rejoin take about half a minute");
  process.exit(2);
}

const report = await runClusterSoak({
  natsNodes: 1,
  replicas: Number(values.replicas),
  senders: Number(values.senders),
  hosts: 4,
  stormSeconds,
  slots: 500,
  crowd: 1_000,
  crowdStartSeconds: stormSeconds / 12,
  crowdSeconds: stormSeconds / 3,
  orders: 100,
  buyers: 50,
  products: 4,
  stock: 30,
  postgresKillsAtSeconds: [stormSeconds / 6, (stormSeconds * 2) / 3],
  poolMax: Number(values["pool-max"]),
  settleTimeoutSeconds: 180,
  logLevel: process.env.SOAK_LOG_LEVEL ?? "error",
  progress: (line) => console.log(`… ${line}`),
});
process.exitCode = printSoakReport("failover soak", report);
