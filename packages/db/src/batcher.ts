// Group commit. Concurrent writes wait here while a batch is being applied; when it returns,
// everything that arrived meanwhile (up to batchMax) goes to the database as the next batch:
// one statement or function call, one transaction, one commit, and each item gets its own
// result (the wallet's transfers, the discount service's claims). One batch at a time per
// process keeps the arrival order of the items. The queue is bounded: past queueMax an item is
// refused at once as UNAVAILABLE, so overload sheds instead of piling up latency and memory.
import { OverloadError } from "@ovation/errors";

/** Called with each batch's size once it is applied, for metrics. */
export type BatchObserver = (size: number) => void;

export interface BatcherLimits {
  /** Transfers per batch at most. */
  batchMax: number;
  /** Transfers waiting for a batch at most. */
  queueMax: number;
}

interface Waiting<Item, Result> {
  item: Item;
  resolve: (result: Result) => void;
  reject: (error: unknown) => void;
}

export class Batcher<Item, Result> {
  readonly #limits: BatcherLimits;
  readonly #apply: (items: Item[]) => Promise<Result[]>;
  #queue: Waiting<Item, Result>[] = [];
  #flushing = false;
  /** Batches applied so far and their sizes, for metrics and tests. */
  batches = 0;
  items = 0;

  readonly #observe: BatchObserver | undefined;

  constructor(limits: BatcherLimits, apply: (items: Item[]) => Promise<Result[]>, observe?: BatchObserver) {
    this.#limits = limits;
    this.#apply = apply;
    this.#observe = observe;
  }

  submit(item: Item): Promise<Result> {
    if (this.#queue.length >= this.#limits.queueMax) {
      return Promise.reject(
        new OverloadError("overloaded", "busy, retry with the same idempotency key", { retryAfterMs: 1_000 }),
      );
    }
    return new Promise((resolve, reject) => {
      this.#queue.push({ item, resolve, reject });
      if (!this.#flushing) {
        this.#flushing = true;
        // Requests that arrived in the same turn of the event loop join the first batch.
        setImmediate(() => void this.#flush());
      }
    });
  }

  async #flush(): Promise<void> {
    while (this.#queue.length > 0) {
      const batch = this.#queue.splice(0, this.#limits.batchMax);
      try {
        const results = await this.#apply(batch.map((waiting) => waiting.item));
        if (results.length !== batch.length)
          throw new Error(`batch of ${batch.length} got ${results.length} results`);
        for (const [index, waiting] of batch.entries()) waiting.resolve(results[index]!);
        this.batches++;
        this.items += batch.length;
        this.#observe?.(batch.length);
      } catch (error) {
        for (const waiting of batch) waiting.reject(error);
      }
    }
    this.#flushing = false;
  }
}
