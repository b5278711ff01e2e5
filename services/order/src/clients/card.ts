// The card processor (services/card), as the order's payment module needs it (CardProcessor,
// app/ports.ts). A decline is not an error: it is a signed result the use case verifies and
// reads. Errors are thrown as they came, infrastructure trouble as UNAVAILABLE, so the
// payment consumer retries with the same key and the processor answers with the first charge.
import { type Client, Code, ConnectError } from "@connectrpc/connect";
import type { CardService, SignedPaymentResult } from "@ovation/proto/gen/ovation/card/v1/card_pb.ts";
import type { CardProcessor } from "../app/ports.ts";

export class CardProcessorClient implements CardProcessor {
  readonly #card: Client<typeof CardService>;

  constructor(card: Client<typeof CardService>) {
    this.#card = card;
  }

  async charge(request: Parameters<CardProcessor["charge"]>[0]): Promise<SignedPaymentResult> {
    const { result } = await this.#card.charge({
      idempotencyKey: request.idempotencyKey,
      reference: request.reference,
      customerId: request.customerId,
      amount: request.money,
      metadata: request.metadata,
    });
    if (result === undefined) throw new Error("the card processor answered a charge without its result");
    return result;
  }

  async chargeByKey(idempotencyKey: string): Promise<SignedPaymentResult | undefined> {
    try {
      const { result } = await this.#card.getCharge({ idempotencyKey });
      return result;
    } catch (error) {
      if (ConnectError.from(error).code === Code.NotFound) return undefined;
      throw error;
    }
  }

  async refund(request: Parameters<CardProcessor["refund"]>[0]): Promise<void> {
    await this.#card.refund({
      chargeId: request.chargeId,
      amount: request.money,
      idempotencyKey: request.idempotencyKey,
    });
  }
}
