// Rate limits, reads (GET) and writes (everything else) counted apart: per client address
// before the token is even verified, so a flood of forged tokens is throttled too, and per
// signed-in user after. Reads get far larger budgets than writes (apps poll balances and
// leaderboards), but not an unlimited one: a read still costs an upstream call and a database
// query. Counters live in this process (rate-limiter-flexible's memory store, expired keys
// freed by timers): with N replicas behind a balancer a client gets up to N times the limit,
// which is what a per-replica guard against floods needs; a shared store (Redis) would make it
// exact.
import { Code } from "@connectrpc/connect";
import { RateLimiterMemory, RateLimiterRes } from "rate-limiter-flexible";
import { HttpError } from "./errors.ts";

export interface RateLimits {
  userWrites: number;
  addressWrites: number;
  userReads: number;
  addressReads: number;
  windowSeconds: number;
}

export type RequestKind = "read" | "write";

export class RateLimiter {
  readonly #limiters: Record<`${RequestKind}:${"user" | "address"}`, RateLimiterMemory>;

  constructor(limits: RateLimits) {
    const limiter = (keyPrefix: string, points: number) =>
      new RateLimiterMemory({
        keyPrefix,
        points,
        duration: limits.windowSeconds,
        blockDuration: 0,
        execEvenly: false,
      });
    this.#limiters = {
      "write:user": limiter("user-writes", limits.userWrites),
      "write:address": limiter("address-writes", limits.addressWrites),
      "read:user": limiter("user-reads", limits.userReads),
      "read:address": limiter("address-reads", limits.addressReads),
    };
  }

  /** Counts one request from `address`; throws 429 with Retry-After when over the limit. */
  checkAddress(kind: RequestKind, address: string): Promise<void> {
    return consume(this.#limiters[`${kind}:address`], address, "too many requests from this address");
  }

  /** Counts one request by `subject`; throws 429 with Retry-After when over the limit. */
  checkUser(kind: RequestKind, subject: string): Promise<void> {
    return consume(this.#limiters[`${kind}:user`], subject, "too many requests, slow down");
  }
}

async function consume(limiter: RateLimiterMemory, key: string, message: string): Promise<void> {
  try {
    await limiter.consume(key, 1);
  } catch (rejection) {
    if (!(rejection instanceof RateLimiterRes)) throw rejection;
    const retryAfterSeconds = Math.max(1, Math.ceil(rejection.msBeforeNext / 1000));
    throw new HttpError(429, Code.ResourceExhausted, message, { "retry-after": String(retryAfterSeconds) });
  }
}
