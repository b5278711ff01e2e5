// CardService handlers: only merchants (services named in CARD_MERCHANTS, by their service
// token) may charge, look up and refund, and each only its own charges.
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import { requireRole } from "@ovation/auth";
import type { CardService } from "@ovation/proto/gen/ovation/card/v1/card_pb.ts";
import { type CardDeps, charge, getCharge, refund } from "../app/charges.ts";
import { CardError } from "../domain/charges.ts";
import { requestSchemas as schemas, validate } from "./validate.ts";

export function cardServiceImpl(
  deps: CardDeps,
  merchants: readonly string[],
): ServiceImpl<typeof CardService> {
  const merchantOf = (ctx: HandlerContext) => {
    const caller = requireRole(ctx, "service");
    if (!merchants.includes(caller.subject))
      throw new CardError("merchant_not_allowed", `${caller.subject} is not a merchant here`);
    return caller.subject;
  };
  return {
    async charge(request, ctx) {
      const merchant = merchantOf(ctx);
      const valid = validate(schemas.charge, request);
      const result = await charge(deps, {
        merchant,
        idempotencyKey: valid.idempotencyKey,
        reference: valid.reference,
        customerId: valid.customerId,
        asset: valid.amount.asset,
        amount: valid.amount.amount,
        metadata: valid.metadata,
      });
      return { result };
    },

    async getCharge(request, ctx) {
      const merchant = merchantOf(ctx);
      const { idempotencyKey } = validate(schemas.getCharge, request);
      return { result: await getCharge(deps, merchant, idempotencyKey) };
    },

    async refund(request, ctx) {
      const merchant = merchantOf(ctx);
      const valid = validate(schemas.refund, request);
      const refunded = await refund(deps, {
        merchant,
        chargeId: valid.chargeId,
        asset: valid.amount.asset,
        amount: valid.amount.amount,
        idempotencyKey: valid.idempotencyKey,
      });
      return {
        refundId: refunded.refundId,
        chargeId: refunded.chargeId,
        amount: { asset: refunded.asset, amount: refunded.amount },
      };
    },
  };
}
