// WatchCampaign: a campaign's counters now, then as they change, until it ends. Everything a
// watcher holds is bounded (decision 0031): streams per user and per replica, one pending update
// per stream (a watcher needs only the latest counters, so a slow reader's backlog is replaced,
// never queued), and the stream's life (it ends when the campaign is ENDED or its end time
// passes, not only when the caller hangs up).

import { OverloadError } from "@ovation/errors";
import { CampaignStatus } from "@ovation/proto/gen/ovation/discount/v1/discount_pb.ts";
import type { CampaignChanged } from "@ovation/proto/gen/ovation/discount/v1/events_pb.ts";
import { DiscountError } from "../domain/campaign.ts";
import type { CampaignCache } from "./campaign-cache.ts";
import type { CampaignRepository, CampaignRow } from "./ports.ts";

export interface WatchLimits {
  /** Streams one user may hold open at once on this replica. */
  perUser: number;
  /** Streams this replica holds at most, all users together. */
  total: number;
}

/** Retry hint when the replica holds as many streams as it may. */
const watchRetryAfterMs = 5_000;

/** Counts the open streams per user; a stream takes a slot before anything else and frees it last. */
export class WatchSlots {
  readonly #limits: WatchLimits;
  readonly #perUser = new Map<string, number>();
  #total = 0;

  constructor(limits: WatchLimits) {
    this.#limits = limits;
  }

  /** Takes a slot for `userId`, or refuses; the returned function frees it (once). */
  take(userId: string): () => void {
    const held = this.#perUser.get(userId) ?? 0;
    if (held >= this.#limits.perUser)
      throw new DiscountError(
        "too_many_watches",
        `at most ${this.#limits.perUser} WatchCampaign streams at once per user`,
        { details: { limit: String(this.#limits.perUser) } },
      );
    if (this.#total >= this.#limits.total)
      throw new OverloadError("overloaded", "too many campaign watchers, retry later", {
        retryAfterMs: watchRetryAfterMs,
      });
    this.#perUser.set(userId, held + 1);
    this.#total++;
    let freed = false;
    return () => {
      if (freed) return;
      freed = true;
      this.#total--;
      const left = this.#perUser.get(userId)! - 1;
      if (left === 0) this.#perUser.delete(userId);
      else this.#perUser.set(userId, left);
    };
  }

  /** Streams open now, all users together (tests, metrics). */
  get open(): number {
    return this.#total;
  }
}

export interface CampaignCounters {
  redeemed: bigint;
  remaining: bigint;
  status: CampaignStatus;
}

export interface WatchDeps {
  store: Pick<CampaignRepository, "fork" | "campaign">;
  cache: CampaignCache;
  slots: WatchSlots;
}

/** setTimeout takes at most 2^31 - 1 ms (~24.8 days); a campaign may run a year. */
const timerMaxMs = 2 ** 31 - 1;

export async function* watchCampaign(
  deps: WatchDeps,
  command: { userId: string; campaignId: string; signal: AbortSignal },
): AsyncGenerator<CampaignCounters> {
  const free = deps.slots.take(command.userId);
  // The one pending update: a newer one replaces it, so a slow reader costs one message.
  let latest: CampaignCounters | undefined;
  let wake: (() => void) | undefined;
  const stopListening = deps.cache.listen(command.campaignId, (change: CampaignChanged) => {
    latest = {
      redeemed: change.redeemed,
      remaining: change.remaining,
      status: change.status as CampaignStatus,
    };
    wake?.();
  });
  const onAbort = () => wake?.();
  command.signal.addEventListener("abort", onAbort);
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    const now = await deps.store.campaign(deps.store.fork(), command.campaignId);
    if (now === null) throw new DiscountError("campaign_not_found", `no campaign ${command.campaignId}`);
    yield countersOf(now);
    let expired = false;
    const expire = () => {
      const leftMs = now.endsAt.getTime() - Date.now();
      if (leftMs <= 0) expired = true;
      // Campaigns longer than a timer can wait are checked again when the timer fires.
      else timer = setTimeout(expire, Math.min(leftMs, timerMaxMs));
      wake?.();
    };
    expire();
    let ended = now.status === CampaignStatus.ENDED;
    while (!ended && !command.signal.aborted) {
      if (latest === undefined && !expired) await new Promise<void>((resolve) => (wake = resolve));
      wake = undefined;
      if (command.signal.aborted) return;
      const update = latest;
      latest = undefined;
      if (update !== undefined) {
        yield update;
        ended = update.status === CampaignStatus.ENDED;
      }
      // Past its end time the campaign can change no more: the last update has been sent.
      if (expired && latest === undefined) return;
    }
  } finally {
    clearTimeout(timer);
    command.signal.removeEventListener("abort", onAbort);
    stopListening();
    free();
  }
}

const countersOf = (row: CampaignRow): CampaignCounters => ({
  redeemed: row.redeemed,
  remaining: row.redemptionLimit - row.redeemed,
  status: row.status,
});
