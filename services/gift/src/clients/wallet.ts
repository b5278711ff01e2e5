// The wallet, as the gift use cases need it (GiftPayments, app/ports.ts). The transfers of many
// concurrent sends are group-committed: while one TransferBatch call is on its way, the
// transfers of new sends queue, and go together in the next one. Each transfer keeps its own
// idempotency key and gets its own outcome, so a send sees exactly what Transfer would have
// answered. A refusal for insufficient funds becomes an outcome the use case acts on; any other
// refusal is thrown as the ConnectError Transfer would have thrown; a call that fails as a whole
// (the wallet unreachable: UNAVAILABLE) fails each of its sends with that error, and their
// retries with the same keys are safe.
import { type Client, Code, ConnectError } from "@connectrpc/connect";
import { Batcher, type BatcherLimits } from "@ovation/db";
import type { TransferOutcome, WalletService } from "@ovation/proto/gen/ovation/wallet/v1/wallet_pb.ts";
import type { GiftPayments, PaymentOutcome, TransferInit } from "../app/ports.ts";

/** How long one TransferBatch call may take, for every send in it. */
export const walletCallTimeoutMs = 5_000;

export class WalletPayments implements GiftPayments {
  readonly #batcher: Batcher<TransferInit, TransferOutcome>;

  constructor(wallet: Client<typeof WalletService>, limits: BatcherLimits) {
    this.#batcher = new Batcher(limits, async (transfers) => {
      const response = await wallet.transferBatch({ transfers }, { timeoutMs: walletCallTimeoutMs });
      return response.outcomes;
    });
  }

  async transfer(request: TransferInit): Promise<PaymentOutcome> {
    const outcome = await this.#batcher.submit(request);
    switch (outcome.result.case) {
      case "transfer":
        return { paid: outcome.result.value };
      case "refusal": {
        const { code, message } = outcome.result.value;
        // FAILED_PRECONDITION is the ledger's insufficient_funds for a plain transfer.
        if (code === Code.FailedPrecondition) return { refused: "insufficient_funds", message };
        throw new ConnectError(message, code);
      }
      default:
        throw new Error("the wallet answered a transfer with neither a result nor a refusal");
    }
  }
}
