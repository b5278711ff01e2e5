// The wallet, as the campaign use cases need it (FundBudget, app/ports.ts): an admin's campaign
// funds its budget through the wallet's FundPromotionBudget, called with the admin's own token
// (the discount service's own identity may not fund anything), with a deadline. A refusal is
// thrown as the wallet gave it, infrastructure trouble as UNAVAILABLE.
import type { Client } from "@connectrpc/connect";
import type { WalletService } from "@ovation/proto/gen/ovation/wallet/v1/wallet_pb.ts";
import type { FundBudget } from "../app/ports.ts";

/** How long funding a budget may take before the admin's request answers UNAVAILABLE. */
const fundTimeoutMs = 5_000;

export function walletBudgets(wallet: Client<typeof WalletService>): FundBudget {
  return async (funding) => {
    await wallet.fundPromotionBudget(
      {
        budgetId: funding.budgetId,
        money: { asset: funding.asset, amount: funding.amount },
        credits: funding.credits,
        idempotencyKey: funding.idempotencyKey,
      },
      { headers: { authorization: `Bearer ${funding.adminToken}` }, timeoutMs: fundTimeoutMs },
    );
  };
}
