// Operating errors of the ledger, typed so the API maps each to one Connect code.
export const ledgerErrorCodes = {
  insufficientFunds: "insufficient_funds",
  idempotencyConflict: "idempotency_conflict",
  unknownAsset: "unknown_asset",
  holdNotFound: "hold_not_found",
  holdNotPending: "hold_not_pending",
  invalidCapture: "invalid_capture",
  holdExpired: "hold_expired",
  permissionDenied: "permission_denied",
  notRefundable: "not_refundable",
  alreadyRefunded: "already_refunded",
  refundTooLarge: "refund_too_large",
  budgetNotFound: "budget_not_found",
  budgetMismatch: "budget_mismatch",
} as const;

export type LedgerErrorCode = (typeof ledgerErrorCodes)[keyof typeof ledgerErrorCodes];

export class LedgerError extends Error {
  override name = "LedgerError";
  readonly code: LedgerErrorCode;

  constructor(code: LedgerErrorCode, message: string) {
    super(message);
    this.code = code;
  }
}

export const isLedgerError = (error: unknown): error is LedgerError => error instanceof LedgerError;
