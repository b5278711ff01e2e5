// Proves that every movement no sender consented to rests on a fact the wallet checks, against
// the real Postgres and NATS: coins are minted only for the card processor's signed payment,
// once per charge; a refund goes only to the payer of a capture, at most the capture, once;
// promotion credits come out of a budget an admin funded and never past it. A forged event
// (published as its owning service could, but with no fact behind it) moves no money and lands
// in the DLQ with its reason. Last, the audit catches a transfer that got through without its fact.
import { create, type DescMessage, type MessageShape, toBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { jetstream } from "@nats-io/jetstream";
import { headers as natsHeaders } from "@nats-io/nats-core";
import { createStatementSigner, readSigningKey, statementPurposes } from "@ovation/auth";
import { DlqAdmin, headerNames } from "@ovation/events";
import {
  ChargeStatus,
  PaymentResultSchema,
  type SignedPaymentResult,
} from "@ovation/proto/gen/ovation/card/v1/card_pb.ts";
import { RedemptionRecordedSchema } from "@ovation/proto/gen/ovation/discount/v1/events_pb.ts";
import { OrderCompletedSchema } from "@ovation/proto/gen/ovation/order/v1/events_pb.ts";
import { TransferKind, WalletService } from "@ovation/proto/gen/ovation/wallet/v1/wallet_pb.ts";
import { codeOf, waitFor } from "@ovation/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { auditLedger } from "../src/app/audit.ts";
import { transfer } from "../src/app/transfer.ts";
import { startWalletHarness, type WalletHarness } from "./helpers.ts";

let h: WalletHarness;
let admin: ReturnType<typeof walletClient>;
let shop: ReturnType<typeof walletClient>;
const walletClient = (token?: string) => h.client(WalletService, token);

beforeAll(async () => {
  h = await startWalletHarness({ WALLET_COIN_PRICE_MIN: "100" });
  admin = walletClient(await h.env.token("root", ["admin"]));
  shop = walletClient(await h.env.serviceToken("order"));
});
afterAll(() => h?.close());

const coin = (amount: bigint) => ({ asset: "COIN", amount });
const key = () => crypto.randomUUID();
const balanceOf = async (userId: string, asset = "COIN") =>
  (await admin.getBalances({ userId })).balances.find((b) => b.asset === asset)?.amount ?? 0n;

/** Publishes an event as the service that owns its subject would (its own NATS identity). */
async function publishAs<Desc extends DescMessage>(
  owner: "order" | "discount",
  schema: Desc,
  subject: string,
  message: MessageShape<Desc>,
): Promise<string> {
  const eventId = crypto.randomUUID();
  const connection = await h.env.connectNats(owner);
  try {
    const headers = natsHeaders();
    headers.set(headerNames.eventId, eventId);
    headers.set(headerNames.eventType, schema.typeName);
    await jetstream(connection).publish(`${h.env.prefix}.${subject}`, toBinary(schema, message), {
      msgID: eventId,
      headers,
    });
  } finally {
    await connection.close();
  }
  return eventId;
}

async function deadLetter(eventId: string): Promise<string> {
  const dlq = new DlqAdmin(h.wallet.bus);
  const entry = await waitFor(
    async () => (await dlq.list(100, "")).entries.find((e) => e.eventId === eventId),
    {
      timeoutMs: 15_000,
      what: `the dead letter of ${eventId}`,
    },
  );
  return entry.reason;
}

async function cardPayment(
  fields: { orderId: string; userId: string; toman: bigint; coins: bigint },
  signer = "card",
  overrides: Partial<{ status: ChargeStatus; reference: string; merchant: string }> = {},
): Promise<SignedPaymentResult> {
  const sign = createStatementSigner(
    await readSigningKey(h.env.keys.service(signer)),
    statementPurposes.paymentResult,
  );
  const result = toBinary(
    PaymentResultSchema,
    create(PaymentResultSchema, {
      chargeId: crypto.randomUUID(),
      merchant: overrides.merchant ?? "order",
      reference: overrides.reference ?? `order:${fields.orderId}`,
      customerId: fields.userId,
      amount: { asset: "TOMAN", amount: fields.toman },
      status: overrides.status ?? ChargeStatus.SUCCEEDED,
      metadata: { coins: String(fields.coins) },
      createTime: timestampFromDate(new Date()),
    }),
  );
  const signed = await sign(result);
  return {
    $typeName: "ovation.card.v1.SignedPaymentResult",
    result,
    signature: signed.signature,
    keyId: signed.keyId,
  };
}

const completed = (orderId: string, userId: string, coins: bigint, payment?: SignedPaymentResult) =>
  create(OrderCompletedSchema, { orderId, userId, coins, cardPayment: payment });

describe("coins bought by card", () => {
  it("are minted against the processor's signed payment, once per charge", async () => {
    const orderId = crypto.randomUUID();
    const payment = await cardPayment({ orderId, userId: "card-buyer", toman: 90_000n, coins: 500n });
    await publishAs(
      "order",
      OrderCompletedSchema,
      "order.order.completed",
      completed(orderId, "card-buyer", 500n, payment),
    );
    await waitFor(async () => (await balanceOf("card-buyer")) === 500n, { what: "the minted coins" });
    // The same completion again under a new event id: the charge has paid for its coins.
    await publishAs(
      "order",
      OrderCompletedSchema,
      "order.order.completed",
      completed(orderId, "card-buyer", 500n, payment),
    );
    // A later completion, processed after it in stream order, shows the duplicate was handled.
    const marker = crypto.randomUUID();
    const markerPayment = await cardPayment({ orderId: marker, userId: "marker", toman: 100n, coins: 1n });
    await publishAs(
      "order",
      OrderCompletedSchema,
      "order.order.completed",
      completed(marker, "marker", 1n, markerPayment),
    );
    await waitFor(async () => (await balanceOf("marker")) === 1n, { what: "the marker's coin" });
    expect(await balanceOf("card-buyer")).toBe(500n);
    expect((await auditLedger(h.wallet.store)).ok).toBe(true);
  });

  it("are never minted for a completion whose payment does not check out: each is dead-lettered with its reason", async () => {
    const orderId = crypto.randomUUID();
    const real = await cardPayment({ orderId, userId: "mallory", toman: 90_000n, coins: 500n });
    const tamperedBytes = new Uint8Array(real.result);
    tamperedBytes[tamperedBytes.length - 1] = (tamperedBytes.at(-1) ?? 0) ^ 1;
    const forgeries: [string, MessageShape<typeof OrderCompletedSchema>, string][] = [
      ["no payment at all", completed(orderId, "mallory", 1_000_000_000n), "carries no signed card payment"],
      [
        "signed by the order service's own key",
        completed(
          orderId,
          "mallory",
          500n,
          await cardPayment({ orderId, userId: "mallory", toman: 90_000n, coins: 500n }, "order"),
        ),
        "not signed by a key of card",
      ],
      [
        "a changed byte",
        completed(orderId, "mallory", 500n, { ...real, result: tamperedBytes }),
        "does not match",
      ],
      [
        "more coins than the processor signed",
        completed(orderId, "mallory", 5_000n, real),
        "was for 500 coins",
      ],
      ["another buyer", completed(orderId, "eve", 500n, real), "was paid by mallory"],
      ["another order", completed(crypto.randomUUID(), "mallory", 500n, real), `paid for order:${orderId}`],
      [
        "coins below the price floor",
        completed(
          orderId,
          "mallory",
          500n,
          await cardPayment({ orderId, userId: "mallory", toman: 1n, coins: 500n }),
        ),
        "below 100 TOMAN a coin",
      ],
      [
        "a declined charge",
        completed(
          orderId,
          "mallory",
          500n,
          await cardPayment({ orderId, userId: "mallory", toman: 90_000n, coins: 500n }, "card", {
            status: ChargeStatus.DECLINED,
          }),
        ),
        "was not paid",
      ],
    ];
    for (const [name, message, reason] of forgeries) {
      const eventId = await publishAs("order", OrderCompletedSchema, "order.order.completed", message);
      expect(await deadLetter(eventId), name).toContain(reason);
    }
    expect(await balanceOf("mallory")).toBe(0n);
    expect(await balanceOf("eve")).toBe(0n);
    expect((await auditLedger(h.wallet.store)).ok).toBe(true);
  });
});

describe("refunds", () => {
  it("go only to the payer of a capture, at most the capture, once", async () => {
    await h.prepareConsent(["payer"]);
    await admin.mint({ userId: "payer", money: coin(100n), idempotencyKey: key() });
    const { hold } = await shop.reserveHold({
      owner: "user:payer",
      consentToken: h.consent("payer"),
      money: coin(60n),
      reference: "order:r1",
      idempotencyKey: key(),
    });
    // Nothing was captured yet: nothing to refund.
    expect(await codeOf(shop.refundHold({ holdId: hold!.id, amount: 1n, idempotencyKey: key() }))).toBe(
      "FailedPrecondition",
    );
    await shop.captureHold({
      holdId: hold!.id,
      creditOwner: "system:revenue",
      amount: 50n,
      kind: TransferKind.SPEND,
    });
    expect(await balanceOf("payer")).toBe(50n);
    expect(await codeOf(shop.refundHold({ holdId: hold!.id, amount: 51n, idempotencyKey: key() }))).toBe(
      "InvalidArgument",
    );
    const refundKey = key();
    const refunded = await shop.refundHold({ holdId: hold!.id, amount: 0n, idempotencyKey: refundKey });
    expect(refunded.transfer).toMatchObject({
      debitOwner: "system:revenue",
      creditOwner: "user:payer",
      kind: TransferKind.REFUND,
      reference: "order:r1",
    });
    expect(refunded.hold?.refundedAmount).toBe(50n);
    const retried = await shop.refundHold({ holdId: hold!.id, amount: 0n, idempotencyKey: refundKey });
    expect(retried.transfer?.id).toBe(refunded.transfer?.id);
    expect(await codeOf(shop.refundHold({ holdId: hold!.id, amount: 1n, idempotencyKey: key() }))).toBe(
      "FailedPrecondition",
    );
    expect(await balanceOf("payer")).toBe(100n);
    // Only a service with holds may refund: not the gift service, not an admin.
    const gift = walletClient(await h.env.serviceToken("gift"));
    expect(await codeOf(gift.refundHold({ holdId: hold!.id, amount: 1n, idempotencyKey: key() }))).toBe(
      "PermissionDenied",
    );
    expect(await codeOf(admin.refundHold({ holdId: hold!.id, amount: 1n, idempotencyKey: key() }))).toBe(
      "PermissionDenied",
    );
    expect((await auditLedger(h.wallet.store)).ok).toBe(true);
  });
});

describe("promotion budgets", () => {
  const redemption = (
    campaignId: string,
    userId: string,
    amount = 100n,
    redemptionId = crypto.randomUUID(),
  ) =>
    create(RedemptionRecordedSchema, { redemptionId, campaignId, userId, money: coin(amount), position: 1n });

  it("are funded by admins only, and credits are paid out of them, never past them", async () => {
    const campaignId = crypto.randomUUID();
    const fund = { budgetId: campaignId, money: coin(100n), credits: 3n, idempotencyKey: key() };
    const discount = walletClient(await h.env.serviceToken("discount"));
    expect(await codeOf(discount.fundPromotionBudget(fund))).toBe("PermissionDenied");
    expect(await codeOf(walletClient(await h.env.token("fan", ["user"])).fundPromotionBudget(fund))).toBe(
      "PermissionDenied",
    );
    const funded = await admin.fundPromotionBudget(fund);
    expect(funded.budget).toMatchObject({ creditsFunded: 3n, creditsSpent: 0n });
    expect((await admin.fundPromotionBudget(fund)).replayed).toBe(true);
    expect(
      await codeOf(admin.fundPromotionBudget({ ...fund, money: coin(101n), idempotencyKey: key() })),
    ).toBe("FailedPrecondition");

    const first = redemption(campaignId, "lucky-1");
    for (const message of [first, redemption(campaignId, "lucky-2"), redemption(campaignId, "lucky-3")])
      await publishAs("discount", RedemptionRecordedSchema, "discount.redemption.recorded", message);
    // The first redemption again under a new event id: paid once.
    await publishAs("discount", RedemptionRecordedSchema, "discount.redemption.recorded", first);
    const fourth = await publishAs(
      "discount",
      RedemptionRecordedSchema,
      "discount.redemption.recorded",
      redemption(campaignId, "unlucky-4"),
    );
    expect(await deadLetter(fourth)).toContain("budget is spent: 3 of 3 credits paid");
    for (const user of ["lucky-1", "lucky-2", "lucky-3"]) expect(await balanceOf(user)).toBe(100n);
    expect(await balanceOf("unlucky-4")).toBe(0n);
    const budget = await admin.getPromotionBudget({ budgetId: campaignId });
    expect(budget.budget).toMatchObject({ creditsFunded: 3n, creditsSpent: 3n });
    expect((await auditLedger(h.wallet.store)).ok).toBe(true);
  });

  it("dead-letter a redemption with no funded budget behind it, or another amount than the budget's", async () => {
    const funded = crypto.randomUUID();
    await admin.fundPromotionBudget({
      budgetId: funded,
      money: coin(10n),
      credits: 5n,
      idempotencyKey: key(),
    });
    const forgeries: [MessageShape<typeof RedemptionRecordedSchema>, string][] = [
      [redemption(crypto.randomUUID(), "greedy", 1_000_000n), "no promotion budget was funded"],
      [redemption(funded, "greedy", 1_000_000n), "budget pays 10 COIN"],
    ];
    for (const [message, reason] of forgeries) {
      const eventId = await publishAs(
        "discount",
        RedemptionRecordedSchema,
        "discount.redemption.recorded",
        message,
      );
      expect(await deadLetter(eventId)).toContain(reason);
    }
    expect(await balanceOf("greedy")).toBe(0n);
    expect((await auditLedger(h.wallet.store)).ok).toBe(true);
  });
});

describe("the audit", () => {
  it("fails on a PURCHASE, REFUND or PROMOTION transfer that rests on no fact", async () => {
    const wallet = { kind: "wallet" } as const;
    const move = (debitOwner: string, kind: TransferKind) =>
      transfer(h.wallet.store, {
        caller: wallet,
        debitOwner,
        creditOwner: "user:smuggler",
        asset: "COIN",
        amount: 7n,
        kind,
        reference: "",
        metadata: {},
        idempotencyKey: key(),
      });
    expect((await auditLedger(h.wallet.store)).ok).toBe(true);
    await move("system:mint", TransferKind.PURCHASE);
    await move("system:revenue", TransferKind.REFUND);
    await move("system:promotions", TransferKind.PROMOTION);
    const report = await auditLedger(h.wallet.store);
    expect(report.ok).toBe(false);
    const failures = report.lines.filter((line) => line.startsWith("FAIL")).join("\n");
    expect(failures).toContain("no card payment paid for these coins");
    expect(failures).toContain("no captured hold of this user refunded this much");
    expect(failures).toContain("no credit of a funded budget");
  });
});
