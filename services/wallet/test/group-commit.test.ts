// Proves group commit keeps every per-transfer guarantee: one batch holding good, overdrawn,
// replayed, conflicting, duplicated and unknown-asset transfers gives each its own outcome and
// changes only what the good ones should, in arrival order; a wallet that dies between a
// batch's commit and its reply answers the retry with the first result; and an expired hold
// can no longer be captured, even before its timer released it.
import { resolve } from "node:path";
import { Code, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { bearerInterceptor } from "@ovation/auth";
import { TransferKind, WalletService } from "@ovation/proto/gen/ovation/wallet/v1/wallet_pb.ts";
import { FaultProxy, testEnvironment, waitFor } from "@ovation/testkit";
import { startServiceProcess } from "@ovation/testkit/bench";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { auditLedger } from "../src/app/audit.ts";
import { transfer } from "../src/app/transfer.ts";
import { LedgerError } from "../src/domain/errors.ts";
import type { Caller } from "../src/domain/policy.ts";
import { giftDebitsSql } from "../src/store/ledger-store.ts";
import { startWalletHarness, type WalletHarness } from "./helpers.ts";

let h: WalletHarness;
const gift: Caller = { kind: "service", name: "gift" };
const coin = (amount: bigint) => ({ asset: "COIN", amount });
const key = () => crypto.randomUUID();
const consent = (user: string) => h.consent(user);

beforeAll(async () => {
  h = await startWalletHarness();
  await h.prepareConsent(["alice", "batcher", "crash-payer", "hot-batch", "late-buyer"]);
});
afterAll(() => h?.close());

const outcomeOf = (promise: Promise<{ transfer: { id: string }; replayed: boolean; debitBalance: bigint }>) =>
  promise.then(
    (result) => ({
      outcome: result.replayed ? "replayed" : "committed",
      id: result.transfer.id,
      balance: result.debitBalance,
    }),
    (error: unknown) => ({ outcome: error instanceof LedgerError ? error.code : String(error) }),
  );

async function balance(owner: string): Promise<bigint> {
  return (await h.wallet.store.balances(owner)).find((b) => b.asset === "COIN")?.amount ?? 0n;
}

describe("group commit", () => {
  it("gives each transfer of one batch its own outcome and changes only what the good ones should", async () => {
    const { store } = h.wallet;
    const admin = h.client(WalletService, await h.env.token("root", ["admin"]));
    await admin.mint({ userId: "alice", money: coin(30n), idempotencyKey: key() });
    const send = (amount: bigint, idempotencyKey: string, asset = "COIN") =>
      transfer(store, {
        caller: gift,
        debitOwner: "user:alice",
        consentOf: "alice",
        creditOwner: "system:gifts-in-transit",
        asset,
        amount,
        kind: TransferKind.GIFT,
        reference: "",
        metadata: {},
        idempotencyKey,
      });
    const earlierKey = key();
    const earlier = await send(5n, earlierKey);
    const transfersBefore = await count("select count(*)::int as n from transfers");
    const batchesBefore = store.batchStats.batches;

    // Started in one turn of the event loop, so the batcher sends them as one batch, in order.
    const [good, overdrawn, replayed, conflicting, afterRefusal, duplicate, unknownAsset, denied] =
      await Promise.all([
        outcomeOf(send(10n, "good")),
        outcomeOf(send(20n, "overdrawn")), // 15 left after the first
        outcomeOf(send(5n, earlierKey)), // the earlier request again
        outcomeOf(send(6n, earlierKey)), // the earlier key, another amount
        outcomeOf(send(15n, "after-refusal")), // the refusal spent nothing: 15 are still there
        outcomeOf(send(10n, "good")), // a copy of the first, in the same batch
        outcomeOf(send(1n, "unknown-asset", "GOLD")),
        outcomeOf(
          transfer(store, {
            caller: gift,
            debitOwner: "user:alice",
            consentOf: "alice",
            creditOwner: "system:revenue",
            asset: "COIN",
            amount: 1n,
            kind: TransferKind.SPEND,
            reference: "",
            metadata: {},
            idempotencyKey: "denied",
          }),
        ),
      ]);
    expect(store.batchStats.batches - batchesBefore).toBe(1);
    expect(good).toMatchObject({ outcome: "committed", balance: 15n });
    expect(overdrawn).toEqual({ outcome: "insufficient_funds" });
    expect(replayed).toMatchObject({ outcome: "replayed", id: earlier.transfer.id, balance: 25n });
    expect(conflicting).toEqual({ outcome: "idempotency_conflict" });
    expect(afterRefusal).toMatchObject({ outcome: "committed", balance: 0n });
    expect(duplicate).toMatchObject({ outcome: "replayed", id: (good as { id: string }).id });
    expect(unknownAsset).toEqual({ outcome: "unknown_asset" });
    expect(denied).toEqual({ outcome: "permission_denied" });

    expect(await balance("user:alice")).toBe(0n);
    expect(await count("select count(*)::int as n from transfers")).toBe(transfersBefore + 2);
    expect((await auditLedger(store)).ok).toBe(true);
  });

  it("200 concurrent debits of one account in batches never overdraw it", async () => {
    const admin = h.client(WalletService, await h.env.token("root", ["admin"]));
    const giftClient = h.client(WalletService, await h.env.serviceToken("gift"));
    await admin.mint({ userId: "hot-batch", money: coin(100n), idempotencyKey: key() });
    const batchesBefore = h.wallet.store.batchStats.batches;
    const results = await Promise.allSettled(
      Array.from({ length: 200 }, () =>
        giftClient.transfer({
          debitOwner: "user:hot-batch",
          consentToken: consent("hot-batch"),
          creditOwner: "system:gifts-in-transit",
          money: coin(1n),
          kind: TransferKind.GIFT,
          idempotencyKey: key(),
        }),
      ),
    );
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(100);
    expect(await balance("user:hot-batch")).toBe(0n);
    // Fewer batches than transfers: they really were grouped.
    expect(h.wallet.store.batchStats.batches - batchesBefore).toBeLessThan(200);
    expect((await auditLedger(h.wallet.store)).ok).toBe(true);
  });

  it("refuses to capture a hold past its expiry even before its timer released it", async () => {
    const admin = h.client(WalletService, await h.env.token("root", ["admin"]));
    const shop = h.client(WalletService, await h.env.serviceToken("order"));
    await admin.mint({ userId: "late-buyer", money: coin(10n), idempotencyKey: key() });
    const { hold } = await shop.reserveHold({
      owner: "user:late-buyer",
      consentToken: consent("late-buyer"),
      money: coin(10n),
      idempotencyKey: key(),
    });
    await h.wallet.orm.em
      .fork()
      .execute("update holds set expires_at = now() - interval '1 second' where id = ?", [hold!.id]);
    await expect(
      shop.captureHold({
        holdId: hold!.id,
        creditOwner: "system:revenue",
        amount: 0n,
        kind: TransferKind.SPEND,
      }),
    ).rejects.toThrow(/expired/);
    expect(await balance("system:revenue")).toBe(0n);
    // Its own timer is 15 minutes away: the minutely sweep (or this call) releases it.
    const { expireDueHolds } = await import("../src/app/holds.ts");
    await expireDueHolds(h.wallet.store);
    expect(await balance("user:late-buyer")).toBe(10n);
    expect((await auditLedger(h.wallet.store)).ok).toBe(true);
  });
});

describe("TransferBatch", () => {
  it("answers each item as Transfer would, and one item's refusal never fails the others", async () => {
    const admin = h.client(WalletService, await h.env.token("root", ["admin"]));
    const gift = h.client(WalletService, await h.env.serviceToken("gift"));
    await admin.mint({ userId: "batcher", money: coin(10n), idempotencyKey: key() });
    const send = (amount: bigint, extra: object = {}) => ({
      debitOwner: "user:batcher",
      consentToken: consent("batcher"),
      creditOwner: "system:gifts-in-transit",
      money: coin(amount),
      kind: TransferKind.GIFT,
      idempotencyKey: key(),
      ...extra,
    });
    const good = send(4n);
    const { outcomes } = await gift.transferBatch({
      transfers: [
        good,
        send(100n), // more than the balance
        send(1n, { creditOwner: "system:revenue", kind: TransferKind.SPEND }), // not gift's to move
        send(0n), // invalid
        send(6n), // exactly what is left after the first
      ],
    });
    const summary = outcomes.map((o) =>
      o.result.case === "transfer"
        ? `ok ${o.result.value.debitBalance}`
        : `refused ${Code[o.result.value!.code]}`,
    );
    expect(summary).toEqual([
      "ok 6",
      "refused FailedPrecondition",
      "refused PermissionDenied",
      "refused InvalidArgument",
      "ok 0",
    ]);
    // A retry of the batch replays the committed items and refuses nothing new.
    const again = await gift.transferBatch({ transfers: [good] });
    expect(again.outcomes[0]?.result.case === "transfer" && again.outcomes[0].result.value.replayed).toBe(
      true,
    );
    expect(await balance("user:batcher")).toBe(0n);
    await expect(gift.transferBatch({ transfers: [] })).rejects.toThrow(/1..256 items/);
    await expect(
      gift.transferBatch({ transfers: Array.from({ length: 257 }, () => send(1n)) }),
    ).rejects.toThrow(/1..256 items/);
    const user = h.client(WalletService, await h.env.token("batcher", ["user"]));
    await expect(user.transferBatch({ transfers: [send(1n)] })).rejects.toThrow(/requires role service/);
  });
});

describe("lookups that stay index lookups", () => {
  it("finds gift debits by index even when transfers outgrew their statistics (regression: 3.5 s per batch)", async () => {
    const em = h.wallet.orm.em.fork();
    await em.execute("analyze transfers");
    await em.execute(`insert into transfers (id, debit_owner, credit_owner, asset, amount, kind, idempotency_key,
                        request_hash, created_at, carried_event_id)
      select gen_random_uuid(), 'user:stale' || i, 'system:gifts-in-transit', 'COIN', 1, 5, 'stale-' || i, '\\x00',
             now(), gen_random_uuid()
      from generate_series(1, 20000) i`);
    const ids = await em.execute<{ id: string }[]>(
      "select carried_event_id as id from transfers where debit_owner like 'user:stale%' limit 256",
    );
    const plan = await em.execute<{ "QUERY PLAN": string }[]>(`explain ${giftDebitsSql}`, [
      JSON.stringify(ids.map((row) => row.id)),
    ]);
    const text = plan.map((row) => row["QUERY PLAN"]).join("\n");
    expect(text).toContain("transfers_carried_event");
    expect(text).not.toMatch(/Nested Loop|Seq Scan on transfers/);
    await em.execute("delete from transfers where debit_owner like 'user:stale%'");
  });
});

async function count(sql: string): Promise<number> {
  const [row] = await h.wallet.orm.em.fork().execute<{ n: number }[]>(sql);
  return row!.n;
}

describe("a crash between a batch's commit and its reply", () => {
  it("answers the retry with the first result and moves the money once", async () => {
    await using env = await testEnvironment({ extraServices: ["order"] });
    const walletMain = resolve(import.meta.dirname, "../src/main.ts");
    const walletEnv = { ...env.env, LOG_LEVEL: "error" };
    let wallet = await startServiceProcess(walletMain, walletEnv);
    const port = wallet.port;
    await using proxy = await FaultProxy.start(`http://127.0.0.1:${port}`);
    const client = (token: string) =>
      createClient(
        WalletService,
        createGrpcTransport({
          baseUrl: proxy.url(`http://127.0.0.1:${port}`),
          interceptors: [bearerInterceptor(() => token)],
        }),
      );
    const admin = client(await env.token("root", ["admin"]));
    const giftClient = client(await env.serviceToken("gift"));
    const db = new pg.Client({ connectionString: env.databaseUrl });
    await db.connect();
    try {
      await admin.mint({ userId: "crash-payer", money: coin(50n), idempotencyKey: key() });
      const request = {
        debitOwner: "user:crash-payer",
        consentToken: await env.token("crash-payer", ["user"]),
        creditOwner: "system:gifts-in-transit",
        money: coin(20n),
        kind: TransferKind.GIFT,
        idempotencyKey: key(),
      };
      // The reply will sit in the proxy while the wallet dies.
      proxy.delay(500);
      const first = giftClient.transfer(request).then(
        () => "answered",
        () => "lost",
      );
      await waitFor(
        async () =>
          (
            await db.query("select 1 from wallet.transfers where idempotency_key like $1", [
              `%:${request.idempotencyKey}`,
            ])
          ).rowCount === 1,
        { what: "the batch commit" },
      );
      await wallet.stop("SIGKILL");
      proxy.reset();
      expect(await first).toBe("lost");

      wallet = await startServiceProcess(walletMain, walletEnv, port);
      proxy.restore();
      const retried = await giftClient.transfer(request);
      expect(retried.replayed).toBe(true);
      expect(retried.debitBalance).toBe(30n);
      const { rows } = await db.query<{ amount: string }>(
        "select coalesce(sum(balance), 0)::text as amount from wallet.accounts where owner = 'user:crash-payer'",
      );
      expect(rows[0]!.amount).toBe("30");
    } finally {
      await db.end();
      await wallet.stop();
    }
  });
});
