// The payment module. Coins: the buyer places a hold on their coins with their own token when
// ordering (the only consent the wallet accepts), the payment step captures it, a failed order
// releases it, and a capture that landed after its order failed is refunded through the wallet
// (to the payer, at most the capture, once). Cards: the card processor (services/card) charges,
// answers a signed result, and refunds; the signed result travels with the order's events so
// that the saga and the wallet check it, never the shop's word. Every call carries a key derived
// from the order, so a redelivered request pays once. The wallet and the processor are ports
// (app/ports.ts), reached through adapters in clients/.
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { StatementError, type StatementVerifier } from "@ovation/auth";
import { RejectedEventError } from "@ovation/events";
import {
  ChargeStatus,
  type PaymentResult,
  PaymentResultSchema,
  type SignedPaymentResult,
  SignedPaymentResultSchema,
} from "@ovation/proto/gen/ovation/card/v1/card_pb.ts";
import { PaymentMethod } from "@ovation/proto/gen/ovation/order/v1/order_pb.ts";
import { TransferKind } from "@ovation/proto/gen/ovation/wallet/v1/wallet_pb.ts";
import { ShopError } from "../domain/shop.ts";
import type { CardProcessor, CoinHolds, OrderRow, PaymentRow } from "./ports.ts";

export interface PaymentRequest {
  orderId: string;
  userId: string;
  method: PaymentMethod;
  asset: string;
  amount: bigint;
  /** WALLET: the hold placed when ordering. */
  holdId: string;
  /** Coins the order buys (coin packs), signed into the card charge. */
  coins: bigint;
}

export type PaymentOutcome =
  | { paid: true; reference: string; cardPayment?: SignedPaymentResult | undefined }
  | { paid: false; reason: string };

/** How long a buyer's coins stay held for an order: far beyond its saga's deadlines. */
const holdTtlSeconds = 900;
const orderReference = (orderId: string) => `order:${orderId}`;

export class Payments {
  readonly #wallet: CoinHolds;
  readonly #card: CardProcessor;
  readonly #verifyCard: StatementVerifier;

  constructor(wallet: CoinHolds, card: CardProcessor, verifyCard: StatementVerifier) {
    this.#wallet = wallet;
    this.#card = card;
    this.#verifyCard = verifyCard;
  }

  /**
   * Holds the coins an order costs, with the buyer's own token, before the order exists. The
   * hold's reference names the order it is for: a retry of CreateOrder with the same key finds
   * the first hold, and with it the first order's id.
   */
  async reserve(request: {
    orderId: string;
    userId: string;
    amount: bigint;
    consentToken: string;
    idempotencyKey: string;
  }): Promise<{ holdId: string; orderId: string }> {
    const hold = await this.#wallet.reserve({
      owner: `user:${request.userId}`,
      money: { asset: "COIN", amount: request.amount },
      reference: orderReference(request.orderId),
      ttlSeconds: holdTtlSeconds,
      idempotencyKey: request.idempotencyKey,
      consentToken: request.consentToken,
    });
    if ("refused" in hold)
      throw new ShopError("insufficient_coins", `insufficient coins: ${request.amount} COIN needed`);
    return { holdId: hold.holdId, orderId: hold.reference.slice("order:".length) };
  }

  /**
   * The order failed: whatever its payment took goes back. An unused hold is voided (which also
   * stops a capture still on its way); a hold that was captured, or a card that was charged,
   * meanwhile is refunded, by the same key as a late PaymentSucceeded's refund, so once.
   */
  async release(order: OrderRow): Promise<void> {
    const taken = await this.#settle(order);
    if (taken.paid) await this.refund(order, taken.reference);
  }

  /**
   * The payment step's deadline passed without an answer: asks what happened instead of
   * guessing. Coins: the hold is voided, so nothing can be captured any more, and a hold
   * captured already is a payment made. Card: the charge is looked up by the key it was asked
   * with (a charge still on its way after this finds the order failed and is refunded).
   */
  async settleUnanswered(order: OrderRow): Promise<PaymentOutcome> {
    return this.#settle(order);
  }

  async #settle(order: OrderRow): Promise<PaymentOutcome> {
    if (order.paymentMethod === PaymentMethod.CARD) {
      const signed = await this.#card.chargeByKey(orderReference(order.id));
      if (signed === undefined) return { paid: false, reason: "the card was never charged" };
      return this.#outcomeOf(signed);
    }
    if (order.holdId === null) return { paid: false, reason: "no coins were held for this order" };
    const hold = await this.#wallet.void(order.holdId);
    return hold === "captured"
      ? { paid: true, reference: `hold:${order.holdId}` }
      : { paid: false, reason: `the coins' hold is ${hold}` };
  }

  async pay(request: PaymentRequest): Promise<PaymentOutcome> {
    return request.method === PaymentMethod.CARD ? this.#charge(request) : this.#capture(request);
  }

  async #capture(request: PaymentRequest): Promise<PaymentOutcome> {
    if (request.holdId === "") return { paid: false, reason: "no coins were held for this order" };
    const captured = await this.#wallet.capture({
      holdId: request.holdId,
      creditOwner: "system:revenue",
      amount: request.amount,
      kind: TransferKind.SPEND,
    });
    if ("refused" in captured)
      return { paid: false, reason: `the coins are no longer held: ${captured.message}` };
    return { paid: true, reference: `hold:${request.holdId}` };
  }

  async #charge(request: PaymentRequest): Promise<PaymentOutcome> {
    const result = await this.#card.charge({
      idempotencyKey: orderReference(request.orderId),
      reference: orderReference(request.orderId),
      customerId: request.userId,
      money: { asset: request.asset, amount: request.amount },
      metadata: request.coins > 0n ? { coins: request.coins.toString() } : {},
    });
    return this.#outcomeOf(result);
  }

  async #outcomeOf(signed: SignedPaymentResult): Promise<PaymentOutcome> {
    const payment = await this.#verified(signed);
    if (payment.status !== ChargeStatus.SUCCEEDED) return { paid: false, reason: payment.declineReason };
    return { paid: true, reference: `card:${payment.chargeId}`, cardPayment: signed };
  }

  async #verified(signed: SignedPaymentResult): Promise<PaymentResult> {
    const payload = await this.#verifyCard({
      payload: signed.result,
      signature: signed.signature,
      keyId: signed.keyId,
    });
    return fromBinary(PaymentResultSchema, payload);
  }

  /**
   * The payment a PaymentSucceeded or RefundRequested claims, checked against what the payment
   * module recorded (and, for a card, against the processor's signature and the order): a
   * RejectedEventError when no such payment was made.
   */
  async checkPayment(
    order: OrderRow,
    recorded: PaymentRow | null,
    claimed: { reference: string; cardPayment?: SignedPaymentResult | undefined },
  ): Promise<SignedPaymentResult | undefined> {
    const refuse = (why: string) => new RejectedEventError(`order ${order.id}: ${why}`);
    if (recorded === null || recorded.reference !== claimed.reference)
      throw refuse(`no payment ${claimed.reference} was made for it`);
    if (order.paymentMethod !== PaymentMethod.CARD) return undefined;
    const signed =
      recorded.cardPayment === null ? undefined : fromBinary(SignedPaymentResultSchema, recorded.cardPayment);
    if (signed === undefined) throw refuse("its card payment carries no signed result");
    let payment: PaymentResult;
    try {
      payment = await this.#verified(signed);
    } catch (error) {
      if (error instanceof StatementError)
        throw refuse(`its card payment does not check out: ${error.message}`);
      throw error;
    }
    if (
      payment.status !== ChargeStatus.SUCCEEDED ||
      payment.reference !== orderReference(order.id) ||
      payment.customerId !== order.userId ||
      payment.amount?.amount !== order.total
    )
      throw refuse(`the processor's result (charge ${payment.chargeId}) is not this order's payment`);
    return signed;
  }

  /** Gives a payment that arrived after its order had failed back to the payer. */
  async refund(order: OrderRow, reference: string): Promise<void> {
    const idempotencyKey = `${orderReference(order.id)}:refund`;
    if (order.paymentMethod === PaymentMethod.CARD) {
      await this.#card.refund({
        chargeId: reference.slice("card:".length),
        money: { asset: order.asset, amount: order.total },
        idempotencyKey,
      });
      return;
    }
    await this.#wallet.refund({ holdId: order.holdId ?? "", idempotencyKey });
  }
}

/** The binary form a card payment is recorded in (payments.card_payment). */
export const cardPaymentBytes = (signed: SignedPaymentResult | undefined) =>
  signed === undefined ? null : toBinary(SignedPaymentResultSchema, signed);
