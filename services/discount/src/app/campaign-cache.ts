// What every replica keeps in memory about campaigns: the immutable parts (money, window, the
// shared code), and which campaigns are exhausted, learned from the claims this replica makes
// and from every replica's CampaignChanged events (discount.campaign.changed). Once a
// campaign is exhausted, redeems are refused here without touching the database. Listeners
// (WatchCampaign) hear every change.
//
// Events can be missed (a NATS outage, a consumer the server dropped, a crash between a commit
// and its announcement), and a missed "no longer exhausted" (codes added to a single-use
// campaign) would refuse a live campaign for ever. So what memory refuses from, and what
// watchers are shown, is read again from the database on a timer (DISCOUNT_CACHE_REVALIDATE_MS)
// and at once after every NATS reconnect (decision 0031).
import { fromBinary } from "@bufbuild/protobuf";
import { type EphemeralSubscription, type EventBus, subscribeEphemeral } from "@ovation/events";
import {
  type CampaignChanged,
  CampaignChangedSchema,
} from "@ovation/proto/gen/ovation/discount/v1/events_pb.ts";
import type { Logger } from "pino";
import { campaignChanged, discountSubjects } from "./messages.ts";
import type { CampaignRepository, CampaignRow } from "./ports.ts";

export interface CampaignCacheOptions {
  /** How often exhausted and watched campaigns are read again from the database. */
  revalidateEveryMs: number;
}

type CacheStore = Pick<CampaignRepository, "fork" | "campaign" | "campaignByCode" | "campaigns">;

const sameState = (a: CampaignChanged, b: CampaignChanged) =>
  a.redeemed === b.redeemed && a.remaining === b.remaining && a.status === b.status;

export class CampaignCache {
  readonly #store: CacheStore;
  readonly #log: Logger;
  readonly #options: CampaignCacheOptions;
  readonly #byCode = new Map<string, CampaignRow>();
  readonly #byId = new Map<string, CampaignRow>();
  readonly #exhausted = new Set<string>();
  readonly #listeners = new Map<string, Set<(change: CampaignChanged) => void>>();
  /** The last state heard of each watched campaign: a re-read that finds it unchanged is quiet. */
  readonly #heard = new Map<string, CampaignChanged>();
  /**
   * Campaigns an event or a claim spoke of while a re-read was in flight: what they said is at
   * least as new as the re-read, which leaves them alone.
   */
  #spokenDuringRead: Set<string> | undefined;
  #subscription: EphemeralSubscription | undefined;
  #timer: ReturnType<typeof setInterval> | undefined;
  #revalidating: Promise<void> | undefined;
  #revalidateAgain = false;
  /** Re-reads completed, for tests and logs. */
  revalidations = 0;

  constructor(store: CacheStore, logger: Logger, options: CampaignCacheOptions) {
    this.#store = store;
    this.#log = logger.child({ component: "campaign-cache" });
    this.#options = options;
  }

  async start(bus: EventBus): Promise<void> {
    this.#subscription = await subscribeEphemeral(bus, {
      stream: "DISCOUNT",
      subject: discountSubjects.campaignChanged,
      onMessage: (message) => {
        try {
          this.changed(fromBinary(CampaignChangedSchema, message.data));
        } catch (error) {
          this.#log.warn({ err: error }, "undecodable CampaignChanged skipped");
        }
      },
      // Events published while NATS was away may never arrive: read the database again now.
      onResync: () => void this.revalidate(),
      logger: this.#log,
    });
    this.#timer = setInterval(() => void this.revalidate(), this.#options.revalidateEveryMs);
    this.#timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.#timer);
    await this.#subscription?.close();
    await this.#revalidating;
  }

  /** A campaign's immutable parts by id, loaded once. */
  async byId(id: string): Promise<CampaignRow | null> {
    const cached = this.#byId.get(id);
    if (cached !== undefined) return cached;
    const row = await this.#store.campaign(this.#store.fork(), id);
    if (row !== null) this.#remember(row);
    return row;
  }

  /** The campaign of a shared code, loaded once (unknown codes are not cached). */
  async byCode(code: string): Promise<CampaignRow | null> {
    const cached = this.#byCode.get(code);
    if (cached !== undefined) return cached;
    const row = await this.#store.campaignByCode(this.#store.fork(), code);
    if (row !== null) this.#remember(row);
    return row;
  }

  #remember(row: CampaignRow): void {
    this.#byId.set(row.id, row);
    if (row.code !== null) this.#byCode.set(row.code, row);
  }

  isExhausted(campaignId: string): boolean {
    return this.#exhausted.has(campaignId);
  }

  markExhausted(campaignId: string): void {
    this.#spokenDuringRead?.add(campaignId);
    this.#exhausted.add(campaignId);
  }

  /**
   * From an event: every replica learns exhaustion; single-use campaigns can grow again.
   *
   * Events can arrive older than what memory holds: a claim's announcement is written in its
   * transaction, and of two concurrent claims the one that committed first may be published
   * last, with the state it read before the other's claims. So an event that says "redeemable"
   * about a campaign memory holds as exhausted only asks the database again (growth, codes
   * added, is rare), and watchers never hear fewer redemptions than they have heard (claims
   * are never undone, 0028).
   */
  changed(change: CampaignChanged): void {
    this.#spokenDuringRead?.add(change.campaignId);
    if (change.exhausted) this.#exhausted.add(change.campaignId);
    else if (this.#exhausted.has(change.campaignId)) void this.revalidate();
    this.#tell(change);
  }

  /** Watchers hear a change unless it is older than the last one they heard. */
  #tell(change: CampaignChanged): void {
    const listeners = this.#listeners.get(change.campaignId);
    if (listeners === undefined) return;
    const heard = this.#heard.get(change.campaignId);
    if (heard !== undefined && change.redeemed < heard.redeemed) return;
    this.#heard.set(change.campaignId, change);
    for (const listener of listeners) listener(change);
  }

  /** Hears every change of one campaign until the returned function is called. */
  listen(campaignId: string, listener: (change: CampaignChanged) => void): () => void {
    let set = this.#listeners.get(campaignId);
    if (set === undefined) {
      set = new Set();
      this.#listeners.set(campaignId, set);
    }
    set.add(listener);
    return () => {
      set.delete(listener);
      if (set.size > 0 || this.#listeners.get(campaignId) !== set) return;
      this.#listeners.delete(campaignId);
      this.#heard.delete(campaignId);
    };
  }

  /**
   * Reads every exhausted or watched campaign again and corrects memory: a campaign that grew
   * is redeemable again, watchers hear a change they missed. One re-read at a time; a call
   * during one runs another after it, since it may have been asked for by a newer reconnect.
   */
  revalidate(): Promise<void> {
    if (this.#revalidating !== undefined) {
      this.#revalidateAgain = true;
      return this.#revalidating;
    }
    this.#revalidating = (async () => {
      do {
        this.#revalidateAgain = false;
        await this.#revalidateOnce();
      } while (this.#revalidateAgain);
    })().finally(() => {
      this.#revalidating = undefined;
    });
    return this.#revalidating;
  }

  async #revalidateOnce(): Promise<void> {
    const ids = [...new Set([...this.#exhausted, ...this.#listeners.keys()])];
    if (ids.length === 0) return;
    const spoken = new Set<string>();
    this.#spokenDuringRead = spoken;
    let rows: CampaignRow[];
    try {
      rows = await this.#store.campaigns(this.#store.fork(), ids);
    } catch (error) {
      // The database is away: keep what memory knows, and try again on the next tick.
      this.#log.warn({ err: error }, "campaign cache not re-validated");
      return;
    } finally {
      this.#spokenDuringRead = undefined;
    }
    const now = Date.now();
    for (const row of rows) {
      if (spoken.has(row.id)) continue;
      const state = campaignChanged(row);
      const heard = this.#heard.get(row.id);
      // The database's state is the newest: watchers hear it even if it says fewer.
      if (this.#listeners.has(row.id) && (heard === undefined || !sameState(heard, state))) {
        this.#heard.delete(row.id);
        this.#tell(state);
      }
      // An expired campaign is refused by its window, also from memory: forgetting it keeps the
      // set to the campaigns that can still be redeemed.
      if (state.exhausted && row.endsAt.getTime() > now) this.#exhausted.add(row.id);
      else this.#exhausted.delete(row.id);
    }
    this.revalidations++;
  }
}
