// Requests that repeat an idempotency key at the same moment. A retry that arrives while the
// first request is still in flight must wait for the first's answer and return it, not race it
// to the unique index and answer "already exists". Each use case that records a keyed request
// takes this lock first in its transaction: the second waits (bounded by the pool's
// lock_timeout) until the first commits or rolls back, then reads what the first recorded.
import type { EntityManager } from "@mikro-orm/postgresql";

/**
 * Holds a transaction-scoped advisory lock on `(scope, key)` until the transaction ends.
 * `scope` names the kind of request and its owner ("order:<user id>"), so equal keys of
 * different callers never wait for each other.
 */
export async function lockIdempotencyKey(em: EntityManager, scope: string, key: string): Promise<void> {
  // The pair as a JSON array: unambiguous ("a:b" + "c" never meets "a" + "b:c") and free of
  // NUL, which PostgreSQL text cannot hold (a NUL separator failed every call with 08P01
  // "invalid message format", a protocol error the error model reads as an outage).
  await em.execute("select pg_advisory_xact_lock(hashtextextended(?, 0))", [JSON.stringify([scope, key])]);
}
