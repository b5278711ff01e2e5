// Database exceptions are classified and mapped to Connect codes in one place:
// - an outage (server unreachable, restarting, shutting down, out of connections) is
//   UNAVAILABLE: the caller retries with the same idempotency key, and consumers pause instead
//   of spending an event's delivery budget;
// - a lost race (deadlock, serialization failure, optimistic lock) is retried here a bounded
//   number of times and only then reported, as ABORTED;
// - a unique violation is ALREADY_EXISTS, a broken constraint FAILED_PRECONDITION.
import { Code, ConnectError } from "@connectrpc/connect";
import {
  CheckConstraintViolationException,
  ConnectionException,
  DeadlockException,
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
  adminShutdown: "57P01",
  crashShutdown: "57P02",
  cannotConnectNow: "57P03",
  databaseDropped: "57P04",
  idleSessionTimeout: "57P05",
  tooManyConnections: "53300",
} as const;

/** SQLSTATE classes that mean the server or the connection, not the statement, failed. */
const infrastructureStateClasses = new Set([
  "08", // connection exception
  "53", // insufficient resources (too many connections, disk full, out of memory)
  "58", // system error (I/O)
]);

const infrastructureStates = new Set<string>([
  pgErrorCodes.adminShutdown,
  pgErrorCodes.crashShutdown,
  pgErrorCodes.cannotConnectNow,
  pgErrorCodes.databaseDropped,
  pgErrorCodes.idleSessionTimeout,
]);

/** Socket-level failures Node reports on the error's `code`. */
const socketErrorCodes = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ECONNABORTED",
  "EPIPE",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENOTFOUND",
  "EAI_AGAIN",
]);

/**
 * node-postgres raises these without any code (they come from the client, not the server), so
 * their text is all there is to go on; each is a lost or unobtainable connection.
 */
const pgClientConnectionMessages = [
  "Connection terminated",
  "timeout exceeded when trying to connect",
  "Client has encountered a connection error and is not queryable",
  "Client was closed and is not queryable",
  "Cannot use a pool after calling end on the pool",
];

/** The error and its causes, outermost first (bounded: cause chains are short). */
function causeChain(error: unknown): unknown[] {
  const chain: unknown[] = [];
  for (let current = error; current !== undefined && current !== null && chain.length < 8; ) {
    if (chain.includes(current)) break;
    chain.push(current);
    current = typeof current === "object" && "cause" in current ? current.cause : undefined;
  }
  return chain;
}

export function sqlStateOf(error: unknown): string | undefined {
  for (const link of causeChain(error)) {
    const code = typeof link === "object" && link !== null && "code" in link ? link.code : undefined;
    if (typeof code === "string" && /^[0-9A-Z]{5}$/.test(code)) return code;
  }
  return undefined;
}

/** The constraint a statement violated (Postgres names it on unique and check violations). */
export function violatedConstraint(error: unknown): string | undefined {
  for (const link of causeChain(error)) {
    const name =
      typeof link === "object" && link !== null && "constraint" in link ? link.constraint : undefined;
    if (typeof name === "string" && name !== "") return name;
  }
  return undefined;
}

/**
 * True when the database could not be reached or stopped serving, as opposed to refusing the
 * statement: retry later with the same request, and never count it against a message.
 */
export function isInfrastructureError(error: unknown): boolean {
  const state = sqlStateOf(error);
  if (state !== undefined)
    return infrastructureStates.has(state) || infrastructureStateClasses.has(state.slice(0, 2));
  return causeChain(error).some((link) => {
    if (link instanceof ConnectionException) return true;
    if (!(link instanceof Error)) return false;
    const code = "code" in link ? link.code : undefined;
    if (typeof code === "string" && socketErrorCodes.has(code)) return true;
    return pgClientConnectionMessages.some((text) => link.message.includes(text));
  });
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
  if (isInfrastructureError(error)) return new ConnectError("database unavailable, retry", Code.Unavailable);
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
  return error;
}

/** Attempts of a transaction that keeps losing races (deadlock, serialization) before giving up. */
export const raceRetryAttemptsMax = 4;
const raceRetryBaseDelayMs = 5;

/**
 * Runs `work` (a whole transaction) and runs it again, up to raceRetryAttemptsMax times in all,
 * when the database reports a lost race; other errors pass through unchanged.
 */
export async function retryRaces<T>(work: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await work();
    } catch (error) {
      if (attempt >= raceRetryAttemptsMax || !isRetryable(error)) throw error;
      // Jittered, growing pause so the transactions that collided do not collide again.
      await new Promise((resolve) =>
        setTimeout(resolve, raceRetryBaseDelayMs * 2 ** attempt * Math.random()),
      );
    }
  }
}
