// Transaction-scoped advisory locks on names: how two transactions that touch no common row
// still take turns. They end with the transaction, so nothing can leak them, and a wait for
// one is bounded by the pool's lock_timeout like any other lock.
import type { EntityManager } from "@mikro-orm/postgresql";

/**
 * Holds an advisory lock on `name` until the transaction ends. Names are scoped by what they
 * protect ("inventory-order:<id>"); a 64-bit hash of the name is locked.
 */
export async function lockName(em: EntityManager, name: string): Promise<void> {
  await em.execute("select pg_advisory_xact_lock(hashtextextended(?, 0))", [name]);
}

/**
 * Requests that repeat an idempotency key at the same moment: a retry that arrives while the
 * first request is still in flight must wait for the first's answer and return it, not race it
 * to the unique index and answer "already exists". A use case that records a keyed request
 * takes this lock first in its transaction; the second request waits until the first commits
 * or rolls back, then reads what the first recorded. `scope` names the kind of request and its
 * owner ("order:<user id>"), so equal keys of different callers never wait for each other.
 */
export function lockIdempotencyKey(em: EntityManager, scope: string, key: string): Promise<void> {
  return lockName(em, JSON.stringify([scope, key]));
}
