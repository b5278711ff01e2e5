// The wallet, as the order's payment module needs it (CoinHolds, app/ports.ts): holds on the
// buyer's coins. FAILED_PRECONDITION, the wallet's "not possible in this state" (too few coins
// to hold, a hold no longer pending, with the state it is in), becomes an outcome the use case
// acts on; NOT_FOUND of a void becomes "unknown"; every other error is thrown as it came, infrastructure trouble as
// UNAVAILABLE (transport-errors.ts), so the saga's consumer retries with the same key.
import { type Client, Code, ConnectError } from "@connectrpc/connect";
import type { WalletService } from "@ovation/proto/gen/ovation/wallet/v1/wallet_pb.ts";
import { detailsOf } from "@ovation/server";
import type { CoinHolds } from "../app/ports.ts";

const refusalCode = (error: unknown): Code => ConnectError.from(error).code;

export class WalletHolds implements CoinHolds {
  readonly #wallet: Client<typeof WalletService>;

  constructor(wallet: Client<typeof WalletService>) {
    this.#wallet = wallet;
  }

  async reserve(request: Parameters<CoinHolds["reserve"]>[0]): ReturnType<CoinHolds["reserve"]> {
    try {
      const { hold } = await this.#wallet.reserveHold(request);
      if (hold === undefined) throw new Error("the wallet answered ReserveHold without its hold");
      return { holdId: hold.id, reference: hold.reference };
    } catch (error) {
      if (refusalCode(error) === Code.FailedPrecondition)
        return { refused: "insufficient_funds", message: ConnectError.from(error).rawMessage };
      throw error;
    }
  }

  async capture(request: Parameters<CoinHolds["capture"]>[0]): ReturnType<CoinHolds["capture"]> {
    try {
      await this.#wallet.captureHold(request);
      return { captured: true };
    } catch (error) {
      if (refusalCode(error) === Code.FailedPrecondition)
        return { refused: "not_held", message: ConnectError.from(error).rawMessage };
      throw error;
    }
  }

  async void(holdId: string): ReturnType<CoinHolds["void"]> {
    try {
      await this.#wallet.voidHold({ holdId });
      return "voided";
    } catch (error) {
      const code = refusalCode(error);
      if (code === Code.NotFound) return "unknown";
      if (code !== Code.FailedPrecondition) throw error;
      // The wallet names the state that refused the void (hold_not_pending's details).
      const status = detailsOf(ConnectError.from(error)).status;
      if (status === "captured" || status === "expired") return status;
      throw error;
    }
  }

  async refund(request: { holdId: string; idempotencyKey: string }): Promise<void> {
    // Amount 0: all of the capture.
    await this.#wallet.refundHold({ ...request, amount: 0n });
  }
}
