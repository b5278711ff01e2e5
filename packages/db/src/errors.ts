// Database exceptions are classified in one place, by SQLSTATE, so a failure means the same
// whether it came through MikroORM or straight from the pg pool (group commit, claims):
// - an outage (server unreachable, restarting, shutting down, out of connections) is
//   `unavailable`: the caller retries with the same idempotency key, and consumers pause instead
//   of spending an event's delivery budget;
// - a statement or lock that outlived its timeout is `unavailable` too: the database is busy;
// - a lost race (deadlock, serialization failure, optimistic lock) is retried here a bounded
//   number of times and only then reported, as `aborted`;
// - a unique violation is `already_exists`, a broken constraint `failed_precondition`.
// They become DatabaseErrors of the one error model (@ovation/errors); packages/server maps
// those to Connect codes like any domain's.
import { ConnectionException, DeadlockException, OptimisticLockError } from "@mikro-orm/core";
import { type DomainError, defineErrors } from "@ovation/errors";

/** PostgreSQL error codes we act on. */
export const pgErrorCodes = {
  uniqueViolation: "23505",
  checkViolation: "23514",
  foreignKeyViolation: "23503",
  notNullViolation: "23502",
  queryCanceled: "57014",
  lockNotAvailable: "55P03",
  idleInTransactionTimeout: "25P03",
  serializationFailure: "40001",
  deadlockDetected: "40P01",
  raiseException: "P0001",
  adminShutdown: "57P01",
  crashShutdown: "57P02",
  cannotConnectNow: "57P03",
  databaseDropped: "57P04",
  idleSessionTimeout: "57P05",
  tooManyConnections: "53300",
  readOnlySqlTransaction: "25006",
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
  // A write reached a node that does not take writes (yet): a standby being promoted, or a
  // primary being demoted. The services never open read-only transactions themselves.
  pgErrorCodes.readOnlySqlTransaction,
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

/** Database failures, as the one error model knows them. */
export const DatabaseError = defineErrors("database", {
  unavailable: "unavailable",
  timed_out: "unavailable",
  lost_race: "aborted",
  unique_violation: "already_exists",
  constraint_violation: "failed_precondition",
  invalid_value: "invalid_argument",
});
export type DatabaseError = InstanceType<typeof DatabaseError>;

/** SQLSTATEs of refused statements, with what they mean. */
const refusals: Record<string, readonly [DatabaseError["code"], string]> = {
  [pgErrorCodes.uniqueViolation]: ["unique_violation", "already exists"],
  [pgErrorCodes.checkViolation]: ["constraint_violation", "the change would break an invariant"],
  [pgErrorCodes.notNullViolation]: ["constraint_violation", "the change would break an invariant"],
  [pgErrorCodes.foreignKeyViolation]: ["constraint_violation", "refers to something that does not exist"],
  [pgErrorCodes.queryCanceled]: ["timed_out", "the database did not answer in time, retry"],
  [pgErrorCodes.lockNotAvailable]: ["timed_out", "busy, retry"],
  [pgErrorCodes.idleInTransactionTimeout]: ["timed_out", "the database did not answer in time, retry"],
};

/**
 * The DatabaseError a database failure stands for, from whichever path it came (MikroORM or the
 * pg pool); undefined for anything that is not a database failure (a bug: INTERNAL).
 */
export function databaseError(error: unknown): DomainError | undefined {
  if (error instanceof DatabaseError) return error;
  if (isInfrastructureError(error))
    return new DatabaseError("unavailable", "database unavailable, retry", { cause: error });
  if (isRetryable(error)) return new DatabaseError("lost_race", "concurrent update, retry", { cause: error });
  const state = sqlStateOf(error) ?? "";
  // Class 22, data exception: a value the database cannot store (a NUL in text, a number out of
  // range): the request's fault, never a reason to retry. Validation should have caught it.
  const refusal =
    refusals[state] ??
    (state.startsWith("22") ? (["invalid_value", "a value the database cannot store"] as const) : undefined);
  if (refusal === undefined) return undefined;
  const constraint = violatedConstraint(error);
  return new DatabaseError(refusal[0], refusal[1], {
    cause: error,
    details: constraint === undefined ? {} : { constraint },
  });
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
