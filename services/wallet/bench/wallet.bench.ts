// `pnpm bench wallet`: transfers per second through the gRPC API at 16 and 64 concurrent
// clients, beside pgbench running the SQL transaction the issue names (conditional debit of a
// random one of 100k wallets + outbox insert) on the same database, in the same run.
//
// Options: --seconds N (per measurement, default 10), --clients 16,64.

import { resolve } from "node:path";
import { parseArgs } from "node:util";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { bearerInterceptor, readSigningKey, serviceTokenSource } from "@ovation/auth";
import { TransferKind, WalletService } from "@ovation/proto/gen/ovation/wallet/v1/wallet_pb.ts";
import { testEnvironment } from "@ovation/testkit";
import { closedLoop, formatMs, formatRate, pgbench, startServiceProcess } from "@ovation/testkit/bench";
import pg from "pg";
import { seedFundedUsers } from "./seed.ts";

const { values } = parseArgs({
  options: { seconds: { type: "string", default: "10" }, clients: { type: "string", default: "16,64" } },
});
const seconds = Number(values.seconds);
const clientCounts = values.clients.split(",").map(Number);
const wallets = 100_000;
const startingBalance = 1_000_000n;
/**
 * The service's own SQL path without Node, Connect or gRPC, one transfer per transaction: the
 * ceiling of any design that commits each transfer on its own.
 */
const postTransferScript = `\\set id random(1, ${wallets})
SELECT * FROM wallet.post_transfers(jsonb_build_array(jsonb_build_object(
  'id', gen_random_uuid(), 'debit', 'user:b' || :id, 'credit', 'system:gifts-in-transit', 'asset', 'COIN',
  'amount', '1', 'kind', 5, 'key', gen_random_uuid()::text, 'hash', '00', 'created_at', now(),
  'requested_by', 'pgbench',
  'events', '[{"event_id":"6f1c1d3e-4b7a-4c36-9d39-2a1f0c6b9a11","subject":"wallet.transfer.committed","type":"t","payload":"CgsM"}]'::jsonb)),
  16);
`;

const pgbenchScript = `\\set id random(1, ${wallets})
BEGIN;
UPDATE pgbench_baseline.wallets SET balance = balance - 1 WHERE id = :id AND balance >= 1;
INSERT INTO pgbench_baseline.outbox (event_id, subject, type, payload)
  VALUES (gen_random_uuid(), 'wallet.transfer.committed', 'ovation.wallet.v1.TransferCommitted', '\\x0a0b0c');
END;
`;

await using env = await testEnvironment();
const wallet = await startServiceProcess(resolve(import.meta.dirname, "../src/main.ts"), {
  ...env.env,
  LOG_LEVEL: "warn",
});
try {
  await seed(env.databaseUrl);
  // The gift service's identity (its policy allows exactly this movement), renewed like the
  // gift service's own: a run can outlast one short-lived service token.
  const token = serviceTokenSource("gift", await readSigningKey(env.keys.service("gift")), "ovation");
  const client = createClient(
    WalletService,
    createGrpcTransport({ baseUrl: wallet.url, interceptors: [bearerInterceptor(token)] }),
  );
  const rows: string[] = [];
  for (const clients of clientCounts) {
    const baseline = await pgbench(env.databaseUrl, pgbenchScript, clients, seconds);
    const sqlPath = await pgbench(env.databaseUrl, postTransferScript, clients, seconds);
    const ours = await closedLoop(clients, seconds * 1000, (worker, iteration) =>
      client.transfer({
        debitOwner: `user:b${1 + Math.floor(Math.random() * wallets)}`,
        creditOwner: "system:gifts-in-transit",
        money: { asset: "COIN", amount: 1n },
        kind: TransferKind.GIFT,
        idempotencyKey: `bench-${clients}-${worker}-${iteration}`,
      }),
    );
    rows.push(
      `| ${clients} | ${formatRate(ours.perSecond)} | ${formatMs(ours.p50Ms)} | ${formatMs(ours.p99Ms)} | ${ours.failed} | ${formatRate(baseline)} | ${(ours.perSecond / baseline).toFixed(2)} | ${formatRate(sqlPath)} |`,
    );
  }
  console.log(
    `\nwallet transfers, ${seconds} s per measurement, ${wallets.toLocaleString("en-US")} wallets\n`,
  );
  console.log(
    "| clients | gRPC transfers/s | p50 ms | p99 ms | failed | pgbench tx/s | ratio | post_transfer via pgbench |",
  );
  console.log("|---|---|---|---|---|---|---|---|");
  for (const row of rows) console.log(row);
} finally {
  await wallet.stop();
}

/** 100k funded wallets for the service (a consistent ledger) and for the pgbench baseline. */
async function seed(databaseUrl: string): Promise<void> {
  const db = new pg.Client({ connectionString: databaseUrl });
  await db.connect();
  try {
    await seedFundedUsers(db, "b", wallets, startingBalance);
    await db.query(`
      create schema pgbench_baseline;
      create table pgbench_baseline.wallets (id int primary key, balance bigint not null check (balance >= 0));
      insert into pgbench_baseline.wallets select i, ${startingBalance} from generate_series(1, ${wallets}) i;
      create table pgbench_baseline.outbox (
        id bigint generated always as identity primary key, event_id uuid not null, subject text not null,
        type text not null, payload bytea not null, headers jsonb not null default '{}',
        created_at timestamptz not null default now());`);
    await db.query("vacuum analyze");
  } finally {
    await db.end();
  }
}
