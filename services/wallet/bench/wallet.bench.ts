// `pnpm bench wallet`: transfers per second through the gRPC API (group commit) at 16 and 64
// concurrent clients, beside two pgbench figures on the same database in the same run:
// - the unbatched ceiling: the wallet's original single-transfer function, one transfer per
//   transaction (unbatched.ts), which batching must beat (issue 8: ≥ 1.5× at 64 clients);
// - the reference transaction of issue 2: a conditional debit of a random wallet plus an
//   outbox insert.
// - with --pgledger FILE, the peer ledger pgledger (github.com/pgr0ss/pgledger: its pgledger.sql,
//   taken from a checkout and never committed here), driven by pgbench as its own performance
//   check drives it: user → user transfers between random accounts of --peer-accounts, one
//   pgledger_create_transfer call per transaction, SQL only, no API (issue 20's target: the
//   API at 16 clients ≥ this peer).
// Every measurement is repeated --runs times, alternating, and medians are reported, with what
// one transfer costs the wallet process and Postgres in CPU (the load generator apart) and the
// statements the wallet sent per transfer.
//
// Options: --seconds N (per measurement, default 10), --clients 16,64, --runs N (default 3),
//          --pgledger FILE (the peer's pgledger.sql), --peer-accounts N (default 10,000).

import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { parseArgs } from "node:util";
import { bearerInterceptor, readSigningKey, serviceTokenSource } from "@ovation/auth";
import { TransferKind, WalletService } from "@ovation/proto/gen/ovation/wallet/v1/wallet_pb.ts";
import { createServiceClient } from "@ovation/server";
import { testEnvironment } from "@ovation/testkit";
import {
  type Cost,
  costTable,
  formatMs,
  formatRate,
  meteredClosedLoop,
  pgbench,
  seedFundedUsers,
  startServiceProcess,
  systemSources,
} from "@ovation/testkit/bench";
import pg from "pg";
import { unbatchedFunctionsSql } from "./unbatched.ts";

const { values } = parseArgs({
  options: {
    seconds: { type: "string", default: "10" },
    clients: { type: "string", default: "16,64" },
    runs: { type: "string", default: "3" },
    pgledger: { type: "string" },
    "peer-accounts": { type: "string", default: "10000" },
  },
});
const peerAccounts = Number(values["peer-accounts"]);
const seconds = Number(values.seconds);
const clientCounts = values.clients.split(",").map(Number);
const runs = Number(values.runs);
const wallets = 100_000;
/**
 * Senders the gRPC path debits, each with its own token as consent (the gift service passes
 * the sender's): signed up front so the load generator only sends. The pgbench figures spread
 * over all wallets; at 16..64 clients 10,000 rows contend no more than 100,000.
 */
const senders = 10_000;
const startingBalance = 1_000_000n;
const systemShards = 16;

const unbatchedScript = `\\set id random(1, ${wallets})
SELECT wallet.bench_post_transfer(gen_random_uuid(), 'user:b' || :id, 'system:gifts-in-transit', 'COIN', 1,
  5::smallint, gen_random_uuid()::text, '\\x00'::bytea,
  '[{"event_id":"6f1c1d3e-4b7a-4c36-9d39-2a1f0c6b9a11","subject":"wallet.transfer.committed","type":"t","payload":"CgsM"}]'::jsonb,
  ${systemShards});
`;

const referenceScript = `\\set id random(1, ${wallets})
BEGIN;
UPDATE pgbench_baseline.wallets SET balance = balance - 1 WHERE id = :id AND balance >= 1;
INSERT INTO pgbench_baseline.outbox (event_id, subject, type, payload)
  VALUES (gen_random_uuid(), 'wallet.transfer.committed', 'ovation.wallet.v1.TransferCommitted', '\\x0a0b0c');
END;
`;

// pgledger's own transfer call between two distinct random accounts (ids looked up by number).
const pgledgerScript = `\\set a random(1, ${peerAccounts})
\\set b 1 + (:a + random(0, ${peerAccounts - 2})) % ${peerAccounts}
SELECT id FROM pgledger_create_transfer(
  (SELECT id FROM bench_accounts WHERE n = :a), (SELECT id FROM bench_accounts WHERE n = :b), 1);
`;

interface Measurement {
  grpc: number;
  p50Ms: number;
  p99Ms: number;
  failed: number;
  meanBatch: number;
  unbatched: number;
  reference: number;
  /** NaN without --pgledger. */
  pgledger: number;
  cost: Cost;
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;

await using env = await testEnvironment();
const wallet = await startServiceProcess(resolve(import.meta.dirname, "../src/main.ts"), {
  ...env.env,
  LOG_LEVEL: "warn",
});
try {
  await seed(env.databaseUrl);
  // The gift service's identity (its policy allows exactly this movement) and its client
  // (Connect over HTTP/2), the token renewed like the gift service's own: a run can outlast one
  // short-lived service token.
  const token = serviceTokenSource("gift", await readSigningKey(env.keys.service("gift")), "ovation");
  const client = createServiceClient(WalletService, {
    baseUrl: wallet.url,
    interceptors: [bearerInterceptor(token)],
  });
  const sources = systemSources({ wallet });
  const consent = await Promise.all(
    Array.from({ length: senders }, (_, i) => env.token(`b${i + 1}`, ["user"])),
  );
  const senderOf = (index: number) => ({ debitOwner: `user:b${index + 1}`, consentToken: consent[index]! });
  const results = new Map<number, Measurement[]>(clientCounts.map((clients) => [clients, []]));
  for (let run = 1; run <= runs; run++) {
    for (const clients of clientCounts) {
      const unbatched = await pgbench(env.databaseUrl, unbatchedScript, clients, seconds);
      const reference = await pgbench(env.databaseUrl, referenceScript, clients, seconds);
      const peer =
        values.pgledger === undefined
          ? Number.NaN
          : await pgbench(env.databaseUrl, pgledgerScript, clients, seconds, "pgledger");
      const batchesBefore = await batchStats(wallet.url);
      // Metered over the warm-up too, so per transfer over every transfer the loop made.
      const { load: ours, cost } = await meteredClosedLoop(
        sources,
        clients,
        seconds * 1000,
        (worker, iteration) =>
          client.transfer({
            ...senderOf(Math.floor(Math.random() * senders)),
            creditOwner: "system:gifts-in-transit",
            money: { asset: "COIN", amount: 1n },
            kind: TransferKind.GIFT,
            idempotencyKey: `bench-${run}-${clients}-${worker}-${iteration}`,
          }),
      );
      const batchesAfter = await batchStats(wallet.url);
      const measurement = {
        grpc: ours.perSecond,
        p50Ms: ours.p50Ms,
        p99Ms: ours.p99Ms,
        failed: ours.failed,
        meanBatch:
          (batchesAfter.sum - batchesBefore.sum) / Math.max(1, batchesAfter.count - batchesBefore.count),
        unbatched,
        reference,
        pgledger: peer,
        cost,
      };
      results.get(clients)!.push(measurement);
      console.log(
        `run ${run}, ${clients} clients: API ${formatRate(ours.perSecond)}/s (batch ${measurement.meanBatch.toFixed(1)}), unbatched ceiling ${formatRate(unbatched)}/s, reference ${formatRate(reference)}/s${Number.isNaN(peer) ? "" : `, pgledger ${formatRate(peer)}/s`}`,
      );
    }
  }
  console.log(
    `\nwallet transfers, ${seconds} s per measurement, ${wallets.toLocaleString("en-US")} wallets, median of ${runs} runs\n`,
  );
  console.log(
    "| clients | API transfers/s | p50 ms | p99 ms | failed | mean batch | unbatched ceiling tx/s | API / ceiling | reference tx/s | API / reference | pgledger tx/s | API / pgledger |",
  );
  console.log("|---|---|---|---|---|---|---|---|---|---|---|---|");
  for (const [clients, measured] of results) {
    const pick = (key: Exclude<keyof Measurement, "cost">) => median(measured.map((m) => m[key]));
    const grpc = pick("grpc");
    console.log(
      `| ${clients} | ${formatRate(grpc)} | ${formatMs(pick("p50Ms"))} | ${formatMs(pick("p99Ms"))} | ${measured.reduce((sum, m) => sum + m.failed, 0)} | ${pick("meanBatch").toFixed(1)} | ${formatRate(pick("unbatched"))} | ${(grpc / pick("unbatched")).toFixed(2)} | ${formatRate(pick("reference"))} | ${(grpc / pick("reference")).toFixed(2)} | ${values.pgledger === undefined ? "– | –" : `${formatRate(pick("pgledger"))} | ${(grpc / pick("pgledger")).toFixed(2)}`} |`,
    );
  }
  for (const [clients, measured] of results) {
    console.log(`\n${clients} clients: cost per API transfer (medians of ${runs} runs)\n`);
    console.log(
      costTable(
        measured.map((m) => m.cost),
        "transfer",
      ),
    );
  }
} finally {
  await wallet.stop();
}

/** Sum and count of the wallet's batch-size histogram, from its /metrics. */
async function batchStats(walletUrl: string): Promise<{ sum: number; count: number }> {
  const text = await (await fetch(`${walletUrl}/metrics`)).text();
  const value = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, "m").exec(text)?.[1] ?? 0);
  return {
    sum: value("ovation_wallet_transfer_batch_size_sum"),
    count: value("ovation_wallet_transfer_batch_size_count"),
  };
}

/** 100k funded wallets for the service (a consistent ledger) and for the pgbench baseline. */
async function seed(databaseUrl: string): Promise<void> {
  const db = new pg.Client({ connectionString: databaseUrl });
  await db.connect();
  try {
    await seedFundedUsers(db, "b", wallets, startingBalance);
    await db.query(unbatchedFunctionsSql);
    await db.query(`
      create schema pgbench_baseline;
      create table pgbench_baseline.wallets (id int primary key, balance bigint not null check (balance >= 0));
      insert into pgbench_baseline.wallets select i, ${startingBalance} from generate_series(1, ${wallets}) i;
      create table pgbench_baseline.outbox (
        id bigint generated always as identity primary key, event_id uuid not null, subject text not null,
        type text not null, payload bytea not null, headers jsonb not null default '{}',
        created_at timestamptz not null default now());`);
    if (values.pgledger !== undefined) await seedPgledger(db, values.pgledger);
    await db.query("vacuum analyze");
  } finally {
    await db.end();
  }
}

/**
 * The peer in its own schema, with --peer-accounts user accounts numbered for pgbench. Its file
 * calls uuid_to_ulid from an extension it vendors apart; where that is missing, a stand-in of
 * the same shape (the uuid's 32 hex digits: ids as long, made as cheaply).
 */
async function seedPgledger(db: pg.Client, file: string): Promise<void> {
  await db.query("create schema pgledger; set search_path = pgledger");
  const { rows } = await db.query("select 1 from pg_proc where proname = 'uuid_to_ulid'");
  if (rows.length === 0) {
    await db.query(
      "create function uuid_to_ulid(id uuid) returns text language sql immutable as $$ select encode(uuid_send(id), 'hex') $$",
    );
  }
  await db.query(readFileSync(file, "utf8"));
  await db.query(`
    create table bench_accounts (n int primary key, id text not null);
    insert into bench_accounts
    select n, (pgledger_create_account('user:p' || n, 'COIN', allow_negative_balance => true)).id
    from generate_series(1, ${peerAccounts}) n;
    set search_path to default`);
}
