// Write rate limits (every method but GET): per client address before the token is even
// verified, so a flood of forged tokens is throttled too, and per signed-in user after. Counters
// live in this process (rate-limiter-flexible's memory store, expired keys freed by timers):
// with N replicas behind a balancer a client gets up to N times the limit, which is what a
// per-replica guard against floods needs; a shared store (Redis) would make it exact.
import { Code } from "@connectrpc/connect";
import { RateLimiterMemory, RateLimiterRes } from "rate-limiter-flexible";
import { HttpError } from "./errors.ts";

export interface WriteLimits {
  userWrites: number;
  addressWrites: number;
  windowSeconds: number;
}

export class WriteRateLimiter {
  readonly #byUser: RateLimiterMemory;
  readonly #byAddress: RateLimiterMemory;

  constructor(limits: WriteLimits) {
    this.#byUser = new RateLimiterMemory({
      keyPrefix: "user",
      points: limits.userWrites,
      duration: limits.windowSeconds,
      blockDuration: 0,
      execEvenly: false,
    });
    this.#byAddress = new RateLimiterMemory({
      keyPrefix: "address",
      points: limits.addressWrites,
      duration: limits.windowSeconds,
      blockDuration: 0,
      execEvenly: false,
    });
  }

  /** Counts one write from `address`; throws 429 with Retry-After when over the limit. */
  checkAddress(address: string): Promise<void> {
    return consume(this.#byAddress, address, "too many requests from this address");
  }

  /** Counts one write by `subject`; throws 429 with Retry-After when over the limit. */
  checkUser(subject: string): Promise<void> {
    return consume(this.#byUser, subject, "too many requests, slow down");
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
