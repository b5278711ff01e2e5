// `./ov soak cluster`: the long cluster soak (cluster.ts). Prints what it did, its figures, the
// ledger audit and every check; exits 1 when a check failed. Needs nats-server on PATH and the
// local Postgres, like the tests; it starts and removes everything else itself.
//
// Options: --seconds N (the storm, default 60; the faults and the crowd scale with it),
//          --senders N (default 32), --slots N (default 1000), --crowd N (default 2000),
//          --orders N (default 200), --pool-max N (DATABASE_POOL_MAX per process; default each
//          service's budget), --direct (no PgBouncer: every process straight to Postgres).
import { parseArgs } from "node:util";
import { printSoakReport, runClusterSoak } from "./cluster.ts";

const { values } = parseArgs({
  options: {
    seconds: { type: "string", default: "60" },
    senders: { type: "string", default: "32" },
    slots: { type: "string", default: "1000" },
    crowd: { type: "string", default: "2000" },
    orders: { type: "string", default: "200" },
    "pool-max": { type: "string" },
    direct: { type: "boolean", default: false },
  },
});
const stormSeconds = Number(values.seconds);
const slots = Number(values.slots);
const crowd = Number(values.crowd);
if (!(stormSeconds >= 20) || !(crowd > slots)) {
  console.error("--seconds must be at least 20, and --crowd larger than --slots");
  process.exit(2);
}
const second = stormSeconds / 60;

const report = await runClusterSoak({
  senders: Number(values.senders),
  hosts: 4,
  stormSeconds,
  slots,
  crowd,
  crowdStartSeconds: 5 * second,
  crowdSeconds: 40 * second,
  orders: Number(values.orders),
  buyers: 100,
  products: 5,
  // Less stock than the orders ask for: some fail for want of it, and are compensated.
  stock: Math.ceil((Number(values.orders) * 1.5 * 0.8) / 5),
  natsKillAtSeconds: 15 * second,
  natsDownSeconds: 10 * second,
  replicaKillAtSeconds: 35 * second,
  replicaDownSeconds: 10 * second,
  poolMax: values["pool-max"] === undefined ? undefined : Number(values["pool-max"]),
  pgBouncer: !values.direct,
  settleTimeoutSeconds: 180,
  logLevel: process.env.SOAK_LOG_LEVEL ?? "error",
  progress: (line) => console.log(`… ${line}`),
});

process.exitCode = printSoakReport("cluster soak", report);
