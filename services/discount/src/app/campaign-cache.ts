// What every replica keeps in memory about campaigns: the immutable parts (money, window, the
// shared code), and which campaigns are exhausted, learned from the claims this replica makes
// and from every replica's CampaignChanged events (discount.campaign.changed). Once a
// campaign is exhausted, redeems are refused here without touching the database. Listeners
// (WatchCampaign) hear every change.
import { fromBinary } from "@bufbuild/protobuf";
import { type EphemeralSubscription, type EventBus, subscribeEphemeral } from "@ovation/events";
import {
  type CampaignChanged,
  CampaignChangedSchema,
} from "@ovation/proto/gen/ovation/discount/v1/events_pb.ts";
import type { Logger } from "pino";
import { discountSubjects } from "./messages.ts";
import type { CampaignRepository, CampaignRow } from "./ports.ts";

export class CampaignCache {
  readonly #store: Pick<CampaignRepository, "fork" | "campaign" | "campaignByCode">;
  readonly #log: Logger;
  readonly #byCode = new Map<string, CampaignRow>();
  readonly #byId = new Map<string, CampaignRow>();
  readonly #exhausted = new Set<string>();
  readonly #listeners = new Map<string, Set<(change: CampaignChanged) => void>>();
  #subscription: EphemeralSubscription | undefined;

  constructor(store: Pick<CampaignRepository, "fork" | "campaign" | "campaignByCode">, logger: Logger) {
    this.#store = store;
    this.#log = logger.child({ component: "campaign-cache" });
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
      // Nothing to reload after an outage: a missed exhaustion is learned from the next claim.
      logger: this.#log,
    });
  }

  async stop(): Promise<void> {
    await this.#subscription?.close();
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
    this.#exhausted.add(campaignId);
  }

  /** From an event: every replica learns exhaustion; single-use campaigns can grow again. */
  changed(change: CampaignChanged): void {
    if (change.exhausted) this.#exhausted.add(change.campaignId);
    else this.#exhausted.delete(change.campaignId);
    for (const listener of this.#listeners.get(change.campaignId) ?? []) listener(change);
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
      if (set.size === 0) this.#listeners.delete(campaignId);
    };
  }
}
