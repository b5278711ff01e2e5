// Database exceptions are mapped to Connect codes in one place, so a unique violation is
// always ALREADY_EXISTS and a lost race is always ABORTED (retryable), never INTERNAL.
import { Code, ConnectError } from "@connectrpc/connect";
import {
  CheckConstraintViolationException,
  ConnectionException,
  DeadlockException,
  DriverException,
  ForeignKeyConstraintViolationException,
  LockWaitTimeoutException,
  OptimisticLockError,
  UniqueConstraintViolationException,
} from "@mikro-orm/core";

/** PostgreSQL error codes we act on. */
export const pgErrorCodes = {
  uniqueViolation: "23505",
  checkViolation: "23514",
  serializationFailure: "40001",
  deadlockDetected: "40P01",
  raiseException: "P0001",
} as const;

export function sqlStateOf(error: unknown): string | undefined {
  if (error instanceof DriverException) return error.code ?? sqlStateOf(error.cause);
  if (typeof error === "object" && error !== null && "code" in error && typeof error.code === "string") {
    return error.code;
  }
  return undefined;
}

/** True for errors a retry of the whole transaction can fix. */
export function isRetryable(error: unknown): boolean {
  const state = sqlStateOf(error);
  return (
    error instanceof DeadlockException ||
    error instanceof OptimisticLockError ||
    state === pgErrorCodes.serializationFailure ||
    state === pgErrorCodes.deadlockDetected
  );
}

/** Maps database errors to ConnectError; anything else passes through unchanged. */
export function mapDatabaseError(error: unknown): unknown {
  if (error instanceof ConnectError) return error;
  if (error instanceof UniqueConstraintViolationException)
    return new ConnectError("already exists", Code.AlreadyExists);
  if (error instanceof CheckConstraintViolationException) {
    return new ConnectError("the change would break an invariant", Code.FailedPrecondition);
  }
  if (error instanceof ForeignKeyConstraintViolationException) {
    return new ConnectError("refers to something that does not exist", Code.FailedPrecondition);
  }
  if (isRetryable(error)) return new ConnectError("concurrent update, retry", Code.Aborted);
  if (error instanceof LockWaitTimeoutException) return new ConnectError("busy, retry", Code.Unavailable);
  if (error instanceof ConnectionException) return new ConnectError("database unavailable", Code.Unavailable);
  return error;
}

const retryAttemptsMax = 3;
const retryBaseDelayMs = 5;

/** Runs `work` and retries it (bounded) when the database reports a lost race. */
export async function withRetry<T>(work: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await work();
    } catch (error) {
      if (attempt >= retryAttemptsMax || !isRetryable(error)) throw mapDatabaseError(error);
      await new Promise((resolve) => setTimeout(resolve, retryBaseDelayMs * 2 ** attempt * Math.random()));
    }
  }
}
