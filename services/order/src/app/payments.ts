// The payment module: pays for an order (a hold on the buyer's coins through the wallet's hold
// API, captured at once; or a card through the provider simulator) and refunds a payment that
// arrived after its order had failed. Every call carries the order id as its idempotency key,
// so a redelivered request pays once.
import { createHash } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import type { Client } from "@connectrpc/connect";
import { Code, ConnectError } from "@connectrpc/connect";
import { PaymentMethod } from "@ovation/proto/gen/ovation/order/v1/order_pb.ts";
import { TransferKind, type WalletService } from "@ovation/proto/gen/ovation/wallet/v1/wallet_pb.ts";

export interface PaymentRequest {
  orderId: string;
  userId: string;
  method: PaymentMethod;
  asset: string;
  amount: bigint;
}

export type PaymentOutcome = { paid: true; reference: string } | { paid: false; reason: string };

export interface CardSettings {
  /** Share of charges the provider declines, 0..1. */
  failureRate: number;
  /** How long the provider takes to answer. */
  latencyMs: number;
  /** Makes declines reproducible: the same seed and order always get the same answer. */
  seed: string;
}

/**
 * A card payment provider simulator. Whether a charge is declined depends only on the seed and
 * the order id (a hash), so tests and soaks are deterministic and a retried charge gets the
 * same answer; a refund is always accepted.
 */
export class CardProvider {
  readonly #settings: CardSettings;
  /** Refunds made, by order id (for tests and operators). */
  readonly refunds = new Map<string, bigint>();

  constructor(settings: CardSettings) {
    this.#settings = { ...settings };
  }

  /** The simulator's declines can be changed while it runs (tests, demos). */
  setFailureRate(rate: number): void {
    if (!(rate >= 0 && rate <= 1)) throw new Error(`failure rate ${rate} is not within 0..1`);
    this.#settings.failureRate = rate;
  }

  async charge(orderId: string, amount: bigint): Promise<PaymentOutcome> {
    if (this.#settings.latencyMs > 0) await sleep(this.#settings.latencyMs);
    const roll =
      createHash("sha256").update(`${this.#settings.seed}:${orderId}`).digest().readUInt32BE(0) / 2 ** 32;
    if (roll < this.#settings.failureRate) return { paid: false, reason: "card declined" };
    return { paid: true, reference: `card:${orderId}:${amount}` };
  }

  async refund(orderId: string, amount: bigint): Promise<void> {
    if (this.#settings.latencyMs > 0) await sleep(this.#settings.latencyMs);
    this.refunds.set(orderId, amount);
  }
}

const holdTtlSeconds = 900;

export class Payments {
  readonly #wallet: Client<typeof WalletService>;
  readonly #card: CardProvider;

  constructor(wallet: Client<typeof WalletService>, card: CardProvider) {
    this.#wallet = wallet;
    this.#card = card;
  }

  get card(): CardProvider {
    return this.#card;
  }

  async pay(request: PaymentRequest): Promise<PaymentOutcome> {
    if (request.method === PaymentMethod.CARD) return this.#card.charge(request.orderId, request.amount);
    let holdId: string;
    try {
      const reserved = await this.#wallet.reserveHold({
        owner: `user:${request.userId}`,
        money: { asset: request.asset, amount: request.amount },
        reference: `order:${request.orderId}`,
        ttlSeconds: holdTtlSeconds,
        idempotencyKey: `order:${request.orderId}`,
      });
      holdId = reserved.hold!.id;
    } catch (error) {
      const refused = ConnectError.from(error);
      if (refused.code === Code.FailedPrecondition) return { paid: false, reason: "insufficient coins" };
      throw error;
    }
    // Captured at once: the coins are the shop's when the payment step succeeds.
    await this.#wallet.captureHold({
      holdId,
      creditOwner: "system:revenue",
      amount: request.amount,
      kind: TransferKind.SPEND,
    });
    return { paid: true, reference: `hold:${holdId}` };
  }

  /** Gives a late payment back: the coins from revenue to the buyer, or a card refund. */
  async refund(request: PaymentRequest): Promise<void> {
    if (request.method === PaymentMethod.CARD) {
      await this.#card.refund(request.orderId, request.amount);
      return;
    }
    await this.#wallet.transfer({
      debitOwner: "system:revenue",
      creditOwner: `user:${request.userId}`,
      money: { asset: request.asset, amount: request.amount },
      kind: TransferKind.REFUND,
      reference: `order:${request.orderId}`,
      idempotencyKey: `order:${request.orderId}:refund`,
    });
  }
}
