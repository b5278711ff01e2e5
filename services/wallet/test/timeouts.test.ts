// Nothing waits forever on the database: a batch blocked by a lock someone else holds gives up
// after the pool's lock timeout, answers UNAVAILABLE (retry with the same key), and frees the
// wallet's in-flight batch slot for everyone else's transfers.
import { Code, ConnectError } from "@connectrpc/connect";
import { WalletService } from "@ovation/proto/gen/ovation/wallet/v1/wallet_pb.ts";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { walletDatabase } from "../src/store/database.ts";
import { startWalletHarness, type WalletHarness } from "./helpers.ts";

let h: WalletHarness;

beforeAll(async () => {
  h = await startWalletHarness({ DATABASE_LOCK_TIMEOUT_MS: "300" });
});
afterAll(() => h?.close());

const coin = (amount: bigint) => ({ asset: "COIN", amount });

describe("database timeouts", () => {
  it("answer UNAVAILABLE for a batch blocked by a held lock, and keep the wallet serving others", async () => {
    const admin = h.client(WalletService, await h.env.token("root", ["admin"]));
    await admin.mint({ userId: "bob", money: coin(100n), idempotencyKey: "bob-1" });
    const holder = new pg.Client({ connectionString: h.env.databaseUrl });
    await holder.connect();
    try {
      await holder.query("begin");
      await holder.query(
        `select * from "${walletDatabase.schema}".accounts where owner = 'user:bob' for update`,
      );
      const blocked = await admin.mint({ userId: "bob", money: coin(5n), idempotencyKey: "bob-2" }).then(
        () => "committed",
        (error: unknown) => Code[ConnectError.from(error).code],
      );
      expect(blocked).toBe("Unavailable");
      // The slot the blocked batch held is free again: another user's money moves meanwhile.
      await admin.mint({ userId: "carl", money: coin(7n), idempotencyKey: "carl-1" });
    } finally {
      await holder.query("rollback");
      await holder.end();
    }
    // The retry with the same key, once the lock is gone, is applied once.
    await admin.mint({ userId: "bob", money: coin(5n), idempotencyKey: "bob-2" });
    const balances = async (userId: string) =>
      (await admin.getBalances({ userId })).balances.find((b) => b.asset === "COIN")?.amount;
    expect(await balances("bob")).toBe(105n);
    expect(await balances("carl")).toBe(7n);
  });
});
