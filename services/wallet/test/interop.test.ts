// Proves that clients which share nothing with our TypeScript code can use the wallet: a stock
// @grpc/grpc-js client built from our .proto files with @grpc/proto-loader, and `buf curl`
// through server reflection (no --schema). Also runs the operator CLI (`ledger audit`, `dlq …`)
// on a live database and stream.
import { execFile } from "node:child_process";
import { resolve } from "node:path";
import { promisify } from "node:util";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { enqueueEvents } from "@ovation/events";
import { WalletService } from "@ovation/proto/gen/ovation/wallet/v1/wallet_pb.ts";
import { waitFor } from "@ovation/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startWalletHarness, type WalletHarness } from "./helpers.ts";

const run = promisify(execFile);
const root = resolve(import.meta.dirname, "../../..");
const buf = resolve(root, "packages/proto/node_modules/.bin/buf");
let h: WalletHarness;
let userToken: string;

beforeAll(async () => {
  h = await startWalletHarness();
  const admin = h.client(WalletService, await h.env.token("root", ["admin"]));
  await admin.mint({ userId: "interop", money: { asset: "COIN", amount: 42n }, idempotencyKey: "seed" });
  userToken = await h.env.token("interop", ["user"]);
});
afterAll(() => h?.close());

describe("interoperability", () => {
  it("a stock grpc-js client with proto-loader calls GetBalances", async () => {
    const definition = protoLoader.loadSync("ovation/wallet/v1/wallet.proto", {
      includeDirs: [resolve(root, "proto"), resolve(root, ".gen/third_party")],
      longs: String,
      defaults: true,
    });
    const loaded = grpc.loadPackageDefinition(definition) as unknown as {
      ovation: { wallet: { v1: { WalletService: grpc.ServiceClientConstructor } } };
    };
    const client = new loaded.ovation.wallet.v1.WalletService(
      h.wallet.server.url.replace("http://", ""),
      grpc.credentials.createInsecure(),
    );
    const metadata = new grpc.Metadata();
    metadata.set("authorization", `Bearer ${userToken}`);
    const response = await new Promise<{ balances: { asset: string; amount: string }[] }>((done, fail) =>
      client.GetBalances!({}, metadata, (error: Error | null, value: never) =>
        error ? fail(error) : done(value),
      ),
    );
    client.close();
    expect(response.balances).toEqual([{ asset: "COIN", amount: "42" }]);
  });

  it("buf curl lists the services by reflection and calls GetBalances without --schema", async () => {
    const base = ["curl", "--protocol", "grpc", "--http2-prior-knowledge"];
    const { stdout: methods } = await run(buf, [...base, h.wallet.server.url, "--list-methods"]);
    expect(methods).toContain("ovation.wallet.v1.WalletService/GetBalances");
    expect(methods).toContain("ovation.dlq.v1.DlqService/ReplayDlqEntry");
    const { stdout } = await run(buf, [
      ...base,
      "-H",
      `authorization: Bearer ${userToken}`,
      `${h.wallet.server.url}/ovation.wallet.v1.WalletService/GetBalances`,
    ]);
    expect(JSON.parse(stdout)).toEqual({ balances: [{ asset: "COIN", amount: "42" }] });
  });

  it("ledger audit passes on a consistent ledger and fails (exit 1) when a balance is tampered with", async () => {
    const cli = resolve(import.meta.dirname, "../src/cli.ts");
    const env = { ...process.env, ...h.env.env };
    const passed = await run(process.execPath, [cli, "audit"], { env });
    expect(passed.stdout).toContain("ledger audit passed");
    await h.wallet.orm.em
      .fork()
      .execute("update accounts set balance = balance + 1 where owner = 'user:interop'");
    const failed = await run(process.execPath, [cli, "audit"], { env }).catch((error) => error);
    expect(failed.code).toBe(1);
    expect(failed.stdout).toContain("FAIL COIN");
    expect(failed.stdout).toContain("user:interop COIN: balance 43 but journal says 42");
    await h.wallet.orm.em
      .fork()
      .execute("update accounts set balance = balance - 1 where owner = 'user:interop'");
  });

  it("ledger audit fails (exit 1) on journaled movements no gift or hold backs, which the zero-sum checks miss", async () => {
    const cli = resolve(import.meta.dirname, "../src/cli.ts");
    const env = { ...process.env, ...h.env.env };
    const em = h.wallet.orm.em.fork();
    // Forged with a matching journal entry, so every asset still sums to zero and every
    // balance matches its journal: only the gift and hold checks can see it.
    const forge = async (debit: string, credit: string, kind: number, amount: number) => {
      const id = crypto.randomUUID();
      await em.execute(
        `insert into transfers (id, debit_owner, credit_owner, asset, amount, kind, idempotency_key, request_hash, created_at)
         values (?, ?, ?, 'COIN', ?, ?, ?, '\\x00', now())`,
        [id, debit, credit, amount, kind, `forged:${id}`],
      );
      for (const owner of [debit, credit]) {
        await em.execute(
          "insert into accounts (owner, asset, shard, balance) values (?, 'COIN', 0, 0) on conflict do nothing",
          [owner],
        );
      }
      await em.execute("update accounts set balance = balance - ? where owner = ? and shard = 0", [
        amount,
        debit,
      ]);
      await em.execute("update accounts set balance = balance + ? where owner = ? and shard = 0", [
        amount,
        credit,
      ]);
      return async () => {
        await em.execute("delete from transfers where id = ?", [id]);
        await em.execute("update accounts set balance = balance + ? where owner = ? and shard = 0", [
          amount,
          debit,
        ]);
        await em.execute("update accounts set balance = balance - ? where owner = ? and shard = 0", [
          amount,
          credit,
        ]);
      };
    };
    const audit = () => run(process.execPath, [cli, "audit"], { env }).catch((error) => error);

    const undoCredit = await forge("system:gifts-in-transit", "user:interop", 4, 5); // an EARN no gift paid for
    const credited = await audit();
    expect(credited.code).toBe(1);
    expect(credited.stdout).toContain(
      "FAIL gifts-in-transit COIN: -5 summed over its shards, not below zero",
    );
    expect(credited.stdout).toContain(
      "FAIL gift credits out of transit (5) equal the settled gift debits (0)",
    );
    expect(credited.stdout).not.toContain("FAIL COIN");
    await undoCredit();

    const undoHold = await forge("user:interop", "system:holds", 8, 3); // money held with no hold
    const held = await audit();
    expect(held.code).toBe(1);
    expect(held.stdout).toContain("FAIL holds COIN: 3 equals the pending holds (0)");
    await undoHold();
    expect((await audit()).stdout).toContain("ledger audit passed");
  });

  it("dlq list, show and discard dead-lettered events from the command line", async () => {
    const cli = resolve(import.meta.dirname, "../src/cli.ts");
    const env = { ...process.env, ...h.env.env };
    const dlq = (...args: string[]) => run(process.execPath, [cli, "dlq", ...args], { env });
    // An undecodable gift event: the host-credit consumer dead-letters it on first delivery.
    const { bus } = h.wallet;
    await bus.js.publish(bus.names.subject("gift.gift.sent"), new Uint8Array([0xff, 0xff, 0xff]));
    const listed = await waitFor(async () => {
      const { stdout } = await dlq("list");
      return stdout.includes('"consumer": "wallet-host-credit"') && stdout;
    });
    const id = /"id": "(\d+)"/.exec(listed)![1]!;
    const shown = JSON.parse((await dlq("show", id)).stdout);
    expect(shown).toMatchObject({
      id,
      stream: bus.names.stream("GIFT"),
      subject: "gift.gift.sent",
      payload: "////",
    });
    expect((await dlq("discard", id)).stdout).toContain(`discarded entry ${id}`);
    const missing = await dlq("show", id).catch((error) => error);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain(`no DLQ entry ${id}`);
    const usage = await dlq("replay", "x").catch((error) => error);
    expect(usage.code).toBe(2);
  });

  it("outbox list shows a row JetStream refused with its error, and outbox retry makes it due now", async () => {
    const cli = resolve(import.meta.dirname, "../src/cli.ts");
    const env = { ...process.env, ...h.env.env };
    const outbox = (...args: string[]) => run(process.execPath, [cli, "outbox", ...args], { env });
    // The wallet may not publish this subject (bus permissions): the relay sets the row aside and
    // keeps the rest flowing.
    await h.wallet.orm.em.fork().transactional((em) =>
      enqueueEvents(em, [
        {
          eventId: crypto.randomUUID(),
          subject: "nowhere.stuck.row",
          type: "t",
          payload: new Uint8Array(),
        },
      ]),
    );
    const listed = await waitFor(async () => {
      const { stdout } = await outbox("list", "wallet");
      return stdout.includes('"subject": "nowhere.stuck.row"') && stdout;
    });
    expect(listed).toMatch(/"attempts": [1-9]/);
    expect(listed).toMatch(/"lastError": ".*Permissions Violation for Publish to .*nowhere\.stuck\.row/);
    const id = /"id": "(\d+)"/.exec(listed)![1]!;
    expect((await outbox("retry", "wallet", id)).stdout).toContain(`outbox row ${id} is due now`);
    const missing = await outbox("retry", "wallet", "999999").catch((error) => error);
    expect(missing.code).toBe(1);
    expect((await outbox("list", "no such schema").catch((error) => error)).code).toBe(2);
    await h.wallet.orm.em.fork().execute("delete from outbox where subject = 'nowhere.stuck.row'");
  });
});
