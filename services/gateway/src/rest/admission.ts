// Admission to an upstream: at most inFlightMax calls at once, at most queueMax waiting for a
// slot, none waiting longer than queueWaitMs. Past either bound the call is refused at once
// with 503 and Retry-After, so an overload costs the client a fast retry instead of a slow
// timeout, and the upstream never sees more calls than it can answer within the deadline.
//
// A small class rather than p-limit or p-queue: those queue without bound or time limit
// (p-queue's `signal` also rejects tasks that already started), and "wait at most N ms, then
// refuse" is the whole point here.
import { Code } from "@connectrpc/connect";
import { upstreamShed } from "../metrics.ts";
import { HttpError } from "./errors.ts";

export interface AdmissionLimits {
  inFlightMax: number;
  queueMax: number;
  queueWaitMs: number;
}

/** What a shed client is told: retry in a second, when the queue has turned over. */
export const shedRetryAfterSeconds = 1;

interface Waiter {
  admit(): void;
  refuse(error: Error): void;
}

export class Admission {
  readonly #limits: AdmissionLimits;
  readonly #name: string;
  /** Insertion-ordered: the first waiter is the oldest. */
  readonly #waiting = new Set<Waiter>();
  #inFlight = 0;

  constructor(name: string, limits: AdmissionLimits) {
    this.#name = name;
    this.#limits = limits;
  }

  get inFlight(): number {
    return this.#inFlight;
  }

  get waiting(): number {
    return this.#waiting.size;
  }

  /**
   * Runs `work` once a slot is free. Throws 503 when the queue is full or the wait runs out,
   * and stops waiting when `signal` aborts (the client went away).
   */
  async run<T>(signal: AbortSignal, work: () => Promise<T>): Promise<T> {
    await this.#acquire(signal);
    try {
      return await work();
    } finally {
      this.#release();
    }
  }

  /**
   * Throws the 503 that `run` would throw at once for a call arriving now, when every slot is
   * taken and the queue is full: the caller refuses before it spends anything on the request.
   */
  refuseWhenFull(): void {
    if (this.#inFlight >= this.#limits.inFlightMax && this.#waiting.size >= this.#limits.queueMax)
      throw this.#busy("queue-full");
  }

  #acquire(signal: AbortSignal): Promise<void> {
    if (this.#inFlight < this.#limits.inFlightMax && this.#waiting.size === 0) {
      this.#inFlight++;
      return Promise.resolve();
    }
    if (this.#waiting.size >= this.#limits.queueMax) return Promise.reject(this.#busy("queue-full"));
    signal.throwIfAborted();
    return new Promise<void>((resolve, reject) => {
      const leave = () => {
        clearTimeout(timer);
        signal.removeEventListener("abort", onAbort);
        this.#waiting.delete(waiter);
      };
      const waiter: Waiter = {
        admit: () => {
          leave();
          resolve();
        },
        refuse: (error) => {
          leave();
          reject(error);
        },
      };
      const onAbort = () => waiter.refuse(signal.reason as Error);
      const timer = setTimeout(() => waiter.refuse(this.#busy("wait-expired")), this.#limits.queueWaitMs);
      signal.addEventListener("abort", onAbort, { once: true });
      this.#waiting.add(waiter);
    });
  }

  #release(): void {
    const next = this.#waiting.values().next();
    // The slot passes straight to the oldest waiter, so in-flight never exceeds the bound.
    if (next.done === true) this.#inFlight--;
    else next.value.admit();
  }

  #busy(reason: "queue-full" | "wait-expired"): HttpError {
    upstreamShed.inc({ upstream: this.#name, reason });
    return new HttpError(503, Code.Unavailable, `the ${this.#name} service is busy, retry later`, {
      "retry-after": String(shedRetryAfterSeconds),
    });
  }
}
