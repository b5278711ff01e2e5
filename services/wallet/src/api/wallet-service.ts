// WalletService handlers: validate, identify the caller, call a use case, shape the response.
// What each caller may move is the domain's policy (domain/policy.ts), checked in the use cases.

import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import {
  actingUser,
  type Identity,
  isAdmin,
  isService,
  KeySetUnavailableError,
  requireRole,
  TokenError,
  type TokenVerifier,
} from "@ovation/auth";
import type { WalletService } from "@ovation/proto/gen/ovation/wallet/v1/wallet_pb.ts";
import { connectErrorOf } from "@ovation/server";
import { auditLedger } from "../app/audit.ts";
import { captureHold, refundHold, reserveHold, voidHold } from "../app/holds.ts";
import { holdMessage, transferMessage } from "../app/messages.ts";
import type { BudgetRow, Facts, Ledger } from "../app/ports.ts";
import { fundPromotionBudget, promotionBudget } from "../app/promotions.ts";
import { transfer } from "../app/transfer.ts";
import { ledgerLimits, systemAccounts, TransferKind, userOwner } from "../domain/ledger.ts";
import type { Caller } from "../domain/policy.ts";
import { requestSchemas as schemas, transferBatchMax, validate } from "./validate.ts";

export { auditLedger };

/** The caller as the policy knows it, from the verified identity. */
function callerOf(identity: Identity): Caller {
  if (isService(identity)) return { kind: "service", name: identity.subject };
  if (isAdmin(identity)) return { kind: "admin", name: identity.subject };
  return { kind: "user", name: identity.subject };
}

/** Idempotency keys are scoped to the caller, so callers can never replay each other's. */
const scopedKey = (identity: Identity, key: string) =>
  `${isService(identity) ? "service" : "user"}:${identity.subject}:${key}`;

/** Cursors are transfer ids (UUIDv7, which sort by time), base64url encoded. */
const encodeCursor = (id: string) => Buffer.from(id).toString("base64url");
const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

function decodeCursor(token: string): string | undefined {
  if (token === "") return undefined;
  const id = Buffer.from(token, "base64url").toString();
  // Only a token this service made decodes back to itself: anything else is refused whole.
  if (!uuidPattern.test(id) || encodeCursor(id) !== token) {
    throw new ConnectError("invalid request: page_token: unknown cursor", Code.InvalidArgument);
  }
  return id;
}

/**
 * The user a consent token speaks for: a user's own token, verified like any bearer token. A
 * service's token is never anyone's consent. Empty: no consent came with the request.
 */
function consentVerifier(verify: TokenVerifier) {
  return async (token: string): Promise<string | undefined> => {
    if (token === "") return undefined;
    let identity: Identity;
    try {
      identity = await verify(token);
    } catch (error) {
      if (error instanceof TokenError)
        throw new ConnectError(`consent_token refused: ${error.message}`, Code.PermissionDenied);
      if (error instanceof KeySetUnavailableError) throw new ConnectError(error.message, Code.Unavailable);
      throw error;
    }
    if (isService(identity))
      throw new ConnectError("consent_token must be a user's token, not a service's", Code.PermissionDenied);
    return identity.subject;
  };
}

function budgetMessage(budget: BudgetRow) {
  return {
    budgetId: budget.budgetId,
    money: { asset: budget.asset, amount: budget.unitAmount },
    creditsFunded: budget.creditsFunded,
    creditsSpent: budget.creditsSpent,
    createTime: timestampFromDate(budget.createdAt),
  };
}

export interface WalletServiceDeps {
  store: Ledger;
  facts: Facts;
  /** Verifies consent tokens (the same verifier as for bearer tokens). */
  verifyToken: TokenVerifier;
}

export function walletServiceImpl({
  store,
  facts,
  verifyToken,
}: WalletServiceDeps): ServiceImpl<typeof WalletService> {
  const consentOf = consentVerifier(verifyToken);
  return {
    async getBalances(request, ctx) {
      const valid = validate(schemas.getBalances, request);
      const balances = await store.balances(userOwner(actingUser(ctx, valid.userId)));
      return { balances };
    },

    async listTransfers(request, ctx) {
      const valid = validate(schemas.listTransfers, request);
      const owner = userOwner(actingUser(ctx, valid.userId));
      const size = valid.pageSize || ledgerLimits.pageSizeDefault;
      const rows = await store.listTransfers(owner, valid.asset, size + 1, decodeCursor(valid.pageToken));
      const page = rows.slice(0, size);
      return {
        transfers: page.map(transferMessage),
        nextPageToken: rows.length > size ? encodeCursor(page[page.length - 1]!.id) : "",
      };
    },

    async transfer(request, ctx) {
      const identity = requireRole(ctx, "service", "admin");
      const valid = validate(schemas.transfer, request);
      const result = await transfer(store, {
        ...valid,
        ...valid.money,
        caller: callerOf(identity),
        idempotencyKey: scopedKey(identity, valid.idempotencyKey),
        consentOf: await consentOf(valid.consentToken),
      });
      return {
        transfer: transferMessage(result.transfer),
        debitBalance: result.debitBalance,
        replayed: result.replayed,
      };
    },

    async transferBatch(request, ctx) {
      const identity = requireRole(ctx, "service");
      if (request.transfers.length < 1 || request.transfers.length > transferBatchMax) {
        throw new ConnectError(
          `invalid request: transfers: 1..${transferBatchMax} items`,
          Code.InvalidArgument,
        );
      }
      const refusal = (error: unknown) => {
        const refused = connectErrorOf(error) ?? new ConnectError("internal error", Code.Internal);
        return {
          result: { case: "refusal" as const, value: { code: refused.code, message: refused.rawMessage } },
        };
      };
      // Consent tokens are verified first (some from the cache, some not), so that the items are
      // then submitted in their order, in one turn of the event loop: one group-commit batch.
      const commands = await Promise.all(
        request.transfers.map(async (item) => {
          try {
            const valid = validate(schemas.transfer, item);
            return {
              command: {
                ...valid,
                ...valid.money,
                caller: callerOf(identity),
                idempotencyKey: scopedKey(identity, valid.idempotencyKey),
                consentOf: await consentOf(valid.consentToken),
              },
            };
          } catch (error) {
            return { refused: refusal(error) };
          }
        }),
      );
      const outcomes = await Promise.all(
        commands.map(async (prepared) => {
          if (prepared.refused !== undefined) return prepared.refused;
          try {
            const result = await transfer(store, prepared.command);
            const response = {
              transfer: transferMessage(result.transfer),
              debitBalance: result.debitBalance,
              replayed: result.replayed,
            };
            return { result: { case: "transfer" as const, value: response } };
          } catch (error) {
            return refusal(error);
          }
        }),
      );
      return { outcomes };
    },

    async mint(request, ctx) {
      const identity = requireRole(ctx, "admin");
      const valid = validate(schemas.mint, request);
      const result = await transfer(store, {
        caller: { kind: "admin", name: identity.subject },
        debitOwner: systemAccounts.mint,
        creditOwner: userOwner(valid.userId),
        ...valid.money,
        kind: TransferKind.MINT,
        reference: valid.reference,
        metadata: { mintedBy: identity.subject },
        idempotencyKey: scopedKey(identity, valid.idempotencyKey),
      });
      const balance = (await store.balances(userOwner(valid.userId))).find(
        (b) => b.asset === valid.money.asset,
      );
      return { transfer: transferMessage(result.transfer), balance: balance?.amount ?? 0n };
    },

    async reserveHold(request, ctx) {
      const identity = requireRole(ctx, "service", "admin");
      const valid = validate(schemas.reserveHold, request);
      const hold = await reserveHold(store, {
        ...valid,
        ...valid.money,
        caller: callerOf(identity),
        ttlSeconds: valid.ttlSeconds || ledgerLimits.holdTtlDefaultSeconds,
        idempotencyKey: scopedKey(identity, valid.idempotencyKey),
        consentOf: await consentOf(valid.consentToken),
      });
      return { hold: holdMessage(hold) };
    },

    async captureHold(request, ctx) {
      const identity = requireRole(ctx, "service", "admin");
      const valid = validate(schemas.captureHold, request);
      return { hold: holdMessage(await captureHold(store, { ...valid, caller: callerOf(identity) })) };
    },

    async voidHold(request, ctx) {
      const identity = requireRole(ctx, "service", "admin");
      const valid = validate(schemas.voidHold, request);
      return { hold: holdMessage(await voidHold(store, callerOf(identity), valid.holdId)) };
    },

    async refundHold(request, ctx) {
      const identity = requireRole(ctx, "service");
      const valid = validate(schemas.refundHold, request);
      const refunded = await refundHold(store, {
        caller: callerOf(identity),
        holdId: valid.holdId,
        amount: valid.amount,
        idempotencyKey: scopedKey(identity, valid.idempotencyKey),
      });
      return { transfer: transferMessage(refunded.transfer), hold: holdMessage(refunded.hold) };
    },

    async fundPromotionBudget(request, ctx) {
      const admin = requireRole(ctx, "admin");
      const valid = validate(schemas.fundPromotionBudget, request);
      const funded = await fundPromotionBudget(store, facts, {
        admin: admin.subject,
        budgetId: valid.budgetId,
        asset: valid.money.asset,
        unitAmount: valid.money.amount,
        credits: valid.credits,
        idempotencyKey: scopedKey(admin, valid.idempotencyKey),
      });
      return { budget: budgetMessage(funded.budget), replayed: funded.replayed };
    },

    async getPromotionBudget(request, ctx) {
      requireRole(ctx, "admin");
      const { budgetId } = validate(schemas.getPromotionBudget, request);
      return { budget: budgetMessage(await promotionBudget(store, facts, budgetId)) };
    },

    async auditLedger(_request, ctx) {
      requireRole(ctx, "admin");
      const report = await auditLedger(store);
      return { ok: report.ok, checks: report.checks };
    },
  };
}
