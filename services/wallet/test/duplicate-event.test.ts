// Regression (issue 19): a repeated carried_event_id inside one post_transfers batch raised a
// unique violation for the whole batch, failing every unrelated caller of that group commit with
// INTERNAL. Proves the second carrier of an event is refused alone, as ALREADY_EXISTS
// (idempotency_conflict), while its neighbours in the same batch commit.
import { TransferKind, WalletService } from "@ovation/proto/gen/ovation/wallet/v1/wallet_pb.ts";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { transfer } from "../src/app/transfer.ts";
import { LedgerError } from "../src/domain/errors.ts";
import type { Caller } from "../src/domain/policy.ts";
import { startWalletHarness, type WalletHarness } from "./helpers.ts";

let h: WalletHarness;
const gift: Caller = { kind: "service", name: "gift" };

beforeAll(async () => {
  h = await startWalletHarness();
});
afterAll(() => h?.close());

describe("a carried event in one group commit", () => {
  it("refuses only the second transfer carrying it; the rest of the batch commits", async () => {
    const { store } = h.wallet;
    const admin = h.client(WalletService, await h.env.token("root", ["admin"]));
    await admin.mint({
      userId: "duplicate-sender",
      money: { asset: "COIN", amount: 10n },
      idempotencyKey: crypto.randomUUID(),
    });
    const eventId = crypto.randomUUID();
    const send = (amount: bigint, carried: string) =>
      transfer(store, {
        caller: gift,
        debitOwner: "user:duplicate-sender",
        consentOf: "duplicate-sender",
        creditOwner: "system:gifts-in-transit",
        asset: "COIN",
        amount,
        kind: TransferKind.GIFT,
        reference: "",
        metadata: {},
        idempotencyKey: crypto.randomUUID(),
        event: {
          eventId: carried,
          subject: "gift.gift.sent",
          type: "ovation.type.v1.Money",
          payload: new Uint8Array([8, 1]),
        },
      }).then(
        (result) => ({ outcome: "committed", balance: result.debitBalance }),
        (error: unknown) =>
          error instanceof LedgerError
            ? { outcome: error.code, message: error.message }
            : { outcome: String(error) },
      );
    const batchesBefore = store.batchStats.batches;
    // Started in one turn of the event loop: one batch, in this order.
    const [first, unrelated, second] = await Promise.all([
      send(1n, eventId),
      send(2n, crypto.randomUUID()),
      send(3n, eventId),
    ]);
    expect(store.batchStats.batches - batchesBefore).toBe(1);
    expect(first).toEqual({ outcome: "committed", balance: 9n });
    expect(unrelated).toEqual({ outcome: "committed", balance: 7n });
    expect(second).toEqual({
      outcome: "idempotency_conflict",
      message: `event ${eventId} was carried by another transfer already`,
    });
  });
});
