// Operating errors of the ledger: one closed table of codes, each with its kind (@ovation/errors).
import { defineErrors } from "@ovation/errors";
/** The ledger domain's operating errors, each with the kind of failure it is (@ovation/errors). */
export const LedgerError = defineErrors("ledger", {
  insufficient_funds: "failed_precondition",
  idempotency_conflict: "already_exists",
  unknown_asset: "invalid_argument",
  hold_not_found: "not_found",
  hold_not_pending: "failed_precondition",
  invalid_capture: "invalid_argument",
  hold_expired: "failed_precondition",
  permission_denied: "permission_denied",
  not_refundable: "failed_precondition",
  already_refunded: "failed_precondition",
  refund_too_large: "invalid_argument",
  budget_not_found: "not_found",
  budget_mismatch: "failed_precondition",
});
export type LedgerError = InstanceType<typeof LedgerError>;
export type LedgerErrorCode = LedgerError["code"];

export const isLedgerError = (error: unknown): error is LedgerError => error instanceof LedgerError;
