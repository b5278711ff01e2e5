// Use case: coins bought by card. The order service completes coin-pack orders, but the coins
// are minted only against the card processor's signed result of the payment, checked here: the
// processor's own key signed it (the order service holds no key that can), the charge
// succeeded, for this order and this buyer, the coins are the ones the processor signed, at a
// price no lower than the floor; and each charge mints once, whatever event or order names it.
// A compromised order service can at most sell coins at the floor price for money a card paid.
import { fromBinary } from "@bufbuild/protobuf";
import {
  createStatementVerifier,
  StatementError,
  type StatementVerifier,
  statementPurposes,
} from "@ovation/auth";
import type { Jwks } from "@ovation/config";
import type { EntityManager } from "@ovation/db";
import { type ReceivedEvent, RejectedEventError } from "@ovation/events";
import {
  ChargeStatus,
  type PaymentResult,
  PaymentResultSchema,
} from "@ovation/proto/gen/ovation/card/v1/card_pb.ts";
import type { OrderCompleted } from "@ovation/proto/gen/ovation/order/v1/events_pb.ts";
import { systemAccounts, TransferKind, userOwner } from "../domain/ledger.ts";
import type { Caller } from "../domain/policy.ts";
import type { Facts, Ledger } from "./ports.ts";
import { transferAll } from "./transfer.ts";

const wallet: Caller = { kind: "wallet" };
/** The only merchant whose card payments buy coins. */
const coinMerchant = "order";

export interface PurchaseSettings {
  /** Checks the processor's signature (createStatementVerifier for "card"). */
  verifyPayment: StatementVerifier;
  /** The asset cards are charged in. */
  cardAsset: string;
  /** The lowest price of one coin, in the card asset's minor units. */
  coinPriceMin: bigint;
}

/** The wallet's settings: the card processor's key only (no other, none the shop holds) signs a payment. */
export function purchaseSettings(config: {
  JWKS_FILE: { jwks: Jwks };
  WALLET_CARD_ASSET: string;
  WALLET_COIN_PRICE_MIN: bigint;
}): PurchaseSettings {
  return {
    verifyPayment: createStatementVerifier(config.JWKS_FILE.jwks, "card", statementPurposes.paymentResult),
    cardAsset: config.WALLET_CARD_ASSET,
    coinPriceMin: config.WALLET_COIN_PRICE_MIN,
  };
}

/** The payment an OrderCompleted with coins rests on, checked; a RejectedEventError otherwise. */
export async function checkedCardPayment(
  settings: PurchaseSettings,
  event: ReceivedEvent<OrderCompleted>,
): Promise<PaymentResult> {
  const { orderId, userId, coins, cardPayment } = event.message;
  const refuse = (why: string) =>
    new RejectedEventError(`order ${orderId} (event ${event.eventId}) claims ${coins} coins, but ${why}`);
  if (cardPayment === undefined || cardPayment.result.length === 0)
    throw refuse("carries no signed card payment");
  let payload: Uint8Array;
  try {
    payload = await settings.verifyPayment({
      payload: cardPayment.result,
      signature: cardPayment.signature,
      keyId: cardPayment.keyId,
    });
  } catch (error) {
    if (error instanceof StatementError)
      throw refuse(`its card payment does not check out: ${error.message}`);
    throw error;
  }
  const payment = fromBinary(PaymentResultSchema, payload);
  if (payment.status !== ChargeStatus.SUCCEEDED) throw refuse(`charge ${payment.chargeId} was not paid`);
  if (payment.merchant !== coinMerchant) throw refuse(`charge ${payment.chargeId} is ${payment.merchant}'s`);
  if (payment.reference !== `order:${orderId}`)
    throw refuse(`charge ${payment.chargeId} paid for ${payment.reference}`);
  if (payment.customerId !== userId)
    throw refuse(`charge ${payment.chargeId} was paid by ${payment.customerId}`);
  if (payment.metadata.coins !== coins.toString())
    throw refuse(`charge ${payment.chargeId} was for ${payment.metadata.coins ?? "no"} coins`);
  const paid = payment.amount;
  if (paid?.asset !== settings.cardAsset || paid.amount < coins * settings.coinPriceMin)
    throw refuse(
      `charge ${payment.chargeId} paid ${paid?.amount} ${paid?.asset}, below ${settings.coinPriceMin} ${settings.cardAsset} a coin`,
    );
  return payment;
}

/** Mints the coins of completed coin-pack orders, in the consumer's transaction. */
export async function mintCardPurchases(
  store: Ledger,
  facts: Facts,
  settings: PurchaseSettings,
  em: EntityManager,
  events: readonly ReceivedEvent<OrderCompleted>[],
): Promise<void> {
  const checked: { event: ReceivedEvent<OrderCompleted>; payment: PaymentResult }[] = [];
  for (const event of events.filter((e) => e.message.coins > 0n))
    checked.push({ event, payment: await checkedCardPayment(settings, event) });
  const minted = await facts.mintedCharges(
    em,
    checked.map((c) => c.payment.chargeId),
  );
  const due = new Map<string, (typeof checked)[number]>();
  for (const entry of checked)
    if (!minted.has(entry.payment.chargeId)) due.set(entry.payment.chargeId, entry);
  if (due.size === 0) return;
  const purchases = [...due.values()];
  const results = await transferAll(
    store,
    purchases.map(({ event, payment }) => ({
      caller: wallet,
      debitOwner: systemAccounts.mint,
      creditOwner: userOwner(event.message.userId),
      asset: "COIN",
      amount: event.message.coins,
      kind: TransferKind.PURCHASE,
      reference: `order:${event.message.orderId}`,
      metadata: { charge: payment.chargeId },
      idempotencyKey: `card:${payment.chargeId}`,
    })),
    em,
  );
  await facts.recordCardPayments(
    em,
    purchases.map(({ event, payment }, index) => ({
      chargeId: payment.chargeId,
      reference: payment.reference,
      customerId: payment.customerId,
      asset: payment.amount!.asset,
      paid: payment.amount!.amount,
      coins: event.message.coins,
      transferId: results[index]!.transfer.id,
    })),
  );
}
