// The wallet calls of many concurrent sends, group-committed: while one TransferBatch call is
// on its way, the transfers of new sends queue, and go together in the next one. Each transfer
// keeps its own idempotency key and gets its own outcome, so a send sees exactly what Transfer
// would have answered; a call that fails as a whole (the wallet unreachable) fails each of its
// sends with that error, and their retries with the same keys are safe.
import type { MessageInitShape } from "@bufbuild/protobuf";
import { type Client, ConnectError } from "@connectrpc/connect";
import { Batcher, type BatcherLimits } from "@ovation/db";
import type {
  TransferOutcome,
  TransferRequestSchema,
  TransferResponse,
  WalletService,
} from "@ovation/proto/gen/ovation/wallet/v1/wallet_pb.ts";

/** How long one TransferBatch call may take, for every send in it. */
export const walletCallTimeoutMs = 5_000;

export type TransferInit = MessageInitShape<typeof TransferRequestSchema>;

export class WalletPayments {
  readonly #batcher: Batcher<TransferInit, TransferOutcome>;

  constructor(wallet: Client<typeof WalletService>, limits: BatcherLimits) {
    this.#batcher = new Batcher(limits, async (transfers) => {
      const response = await wallet.transferBatch({ transfers }, { timeoutMs: walletCallTimeoutMs });
      return response.outcomes;
    });
  }

  /** The wallet's answer to this transfer; a refusal throws the ConnectError Transfer would. */
  async transfer(request: TransferInit): Promise<TransferResponse> {
    const outcome = await this.#batcher.submit(request);
    switch (outcome.result.case) {
      case "transfer":
        return outcome.result.value;
      case "refusal":
        throw new ConnectError(outcome.result.value.message, outcome.result.value.code);
      default:
        throw new Error("the wallet answered a transfer with neither a result nor a refusal");
    }
  }
}
