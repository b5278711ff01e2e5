// WalletService handlers: validate, identify the caller, call a use case, shape the response.
// What each caller may move is the domain's policy (domain/policy.ts), checked in the use cases.
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { actingUser, type Identity, isAdmin, isService, requireRole } from "@ovation/auth";
import { mapDatabaseError } from "@ovation/db";
import type { WalletService } from "@ovation/proto/gen/ovation/wallet/v1/wallet_pb.ts";
import { errorMappingInterceptor } from "@ovation/server";
import { auditLedger } from "../app/audit.ts";
import { captureHold, reserveHold, voidHold } from "../app/holds.ts";
import { holdMessage, transferMessage } from "../app/messages.ts";
import { transfer } from "../app/transfer.ts";
import { isLedgerError, type LedgerErrorCode, ledgerErrorCodes } from "../domain/errors.ts";
import { ledgerLimits, systemAccounts, TransferKind, userOwner } from "../domain/ledger.ts";
import type { Caller } from "../domain/policy.ts";
import type { LedgerStore } from "../store/ledger-store.ts";
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

export function walletServiceImpl(store: LedgerStore): ServiceImpl<typeof WalletService> {
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
      // Submitted in one turn of the event loop, the items share one group-commit batch.
      const outcomes = await Promise.all(
        request.transfers.map(async (item) => {
          try {
            const valid = validate(schemas.transfer, item);
            const result = await transfer(store, {
              ...valid,
              ...valid.money,
              caller: callerOf(identity),
              idempotencyKey: scopedKey(identity, valid.idempotencyKey),
            });
            const response = {
              transfer: transferMessage(result.transfer),
              debitBalance: result.debitBalance,
              replayed: result.replayed,
            };
            return { result: { case: "transfer" as const, value: response } };
          } catch (error) {
            const refused = walletError(error) ?? new ConnectError("internal error", Code.Internal);
            return {
              result: {
                case: "refusal" as const,
                value: { code: refused.code, message: refused.rawMessage },
              },
            };
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
  };
}

const ledgerErrorStatus: Record<LedgerErrorCode, Code> = {
  [ledgerErrorCodes.insufficientFunds]: Code.FailedPrecondition,
  [ledgerErrorCodes.idempotencyConflict]: Code.AlreadyExists,
  [ledgerErrorCodes.unknownAsset]: Code.InvalidArgument,
  [ledgerErrorCodes.holdNotFound]: Code.NotFound,
  [ledgerErrorCodes.holdNotPending]: Code.FailedPrecondition,
  [ledgerErrorCodes.holdExpired]: Code.FailedPrecondition,
  [ledgerErrorCodes.invalidCapture]: Code.InvalidArgument,
  [ledgerErrorCodes.permissionDenied]: Code.PermissionDenied,
};

/** The Connect error a ledger or database error stands for; undefined for anything else. */
function walletError(error: unknown): ConnectError | undefined {
  if (error instanceof ConnectError) return error;
  if (isLedgerError(error)) return new ConnectError(error.message, ledgerErrorStatus[error.code]);
  const mapped = mapDatabaseError(error);
  return mapped instanceof ConnectError ? mapped : undefined;
}

/** Maps ledger and database errors to Connect codes, once, for every wallet RPC. */
export const ledgerErrorInterceptor = errorMappingInterceptor(walletError);
