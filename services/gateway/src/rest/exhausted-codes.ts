// Flash crowds answered from memory (decision 0034). Once the discount service has told this
// replica that a code's campaign is exhausted, later key-less redeems of that code are refused
// here with the very reply the service gave (429 "campaign exhausted"), without an upstream
// call, and those still waiting for an upstream slot are refused at once instead of queueing
// behind the claims.
//
// What memory may refuse, and for how long:
// - Only redeems without an idempotency key. A keyed retry may be a winner's, whose redemption
//   must come back (decision 0031), and only the discount service can look the key up.
// - A refusal is trusted for `revalidateMs`; then one redeem of the code is forwarded again
//   (the others are still refused meanwhile) and its answer renews or ends the refusal. That is
//   the longest a replica refuses a campaign that has slots again when no event says so.
// - A CampaignChanged that says the campaign is not exhausted (codes added, a limit raised)
//   ends its refusals at once; after a NATS reconnect, when events may have been missed, every
//   refusal is forgotten and learned again from the next answer.
// - At most `codesMax` codes are remembered; the oldest is forgotten first.
import { fromBinary } from "@bufbuild/protobuf";
import { ConnectError } from "@connectrpc/connect";
import { type EphemeralSubscription, type EventBus, subscribeEphemeral } from "@ovation/events";
import { ErrorInfoSchema } from "@ovation/proto/gen/google/rpc/error_details_pb.ts";
import { DiscountService } from "@ovation/proto/gen/ovation/discount/v1/discount_pb.ts";
import { CampaignChangedSchema } from "@ovation/proto/gen/ovation/discount/v1/events_pb.ts";
import type { Logger } from "@ovation/server";

export interface ExhaustedCodesLimits {
  /** How long a learnt refusal is trusted before one redeem is forwarded to check it again. */
  revalidateMs: number;
  /** Codes remembered at most. */
  codesMax: number;
}

/** The method whose refusals are remembered. */
export const redeemMethod = DiscountService.method.redeem;

const exhaustedReason = "EXHAUSTED";
const discountDomain = "ovation.discount";

/** What a user types, as the discount service stores it: upper case, no spaces or dashes. */
export const normalizeCode = (code: string): string => code.replace(/[\s-]/g, "").toUpperCase();

interface Refusal {
  campaignId: string;
  /** The discount service's own answer, replayed as it was (same status and body). */
  error: ConnectError;
  /** When the refusal was last confirmed (or a check of it was sent). */
  checkedAt: number;
}

/** Key-less redeems waiting for an upstream slot, per code: refused when the code is learnt. */
interface Waiting {
  controller: AbortController;
  count: number;
}

export class ExhaustedCodes {
  readonly #limits: ExhaustedCodesLimits;
  readonly #log: Logger | undefined;
  /** By normalised code, least recently learnt first. */
  readonly #refusals = new Map<string, Refusal>();
  readonly #waiting = new Map<string, Waiting>();
  #subscription: EphemeralSubscription | undefined;
  /** Redeems refused from memory, for tests and logs. */
  refused = 0;

  constructor(limits: ExhaustedCodesLimits, logger?: Logger) {
    this.#limits = limits;
    this.#log = logger?.child({ component: "exhausted-codes" });
  }

  /** Hears every replica's CampaignChanged: a campaign with slots again is refused no more. */
  async start(bus: EventBus): Promise<void> {
    this.#subscription = await subscribeEphemeral(bus, {
      stream: "DISCOUNT",
      subject: "discount.campaign.changed",
      onMessage: (message) => {
        try {
          const change = fromBinary(CampaignChangedSchema, message.data);
          if (!change.exhausted) this.forgetCampaign(change.campaignId);
        } catch (error) {
          this.#log?.warn({ err: error }, "undecodable CampaignChanged skipped");
        }
      },
      // Events published while NATS was away may never arrive: learn everything again.
      onResync: () => this.#refusals.clear(),
      ...(this.#log === undefined ? {} : { logger: this.#log }),
    });
  }

  async stop(): Promise<void> {
    await this.#subscription?.close();
  }

  /** Codes whose refusal is remembered now. */
  get size(): number {
    return this.#refusals.size;
  }

  /** Whether a refusal of `code` (normalised) is remembered now. */
  has(code: string): boolean {
    return this.#refusals.has(code);
  }

  /**
   * The remembered refusal of a key-less redeem of `code`, or undefined to forward it. A refusal
   * older than `revalidateMs` lets this one redeem through to check it, and keeps refusing the
   * others until that answer is back.
   */
  refusal(code: string, now = performance.now()): ConnectError | undefined {
    const refusal = this.#refusals.get(code);
    if (refusal === undefined) return undefined;
    if (now - refusal.checkedAt >= this.#limits.revalidateMs) {
      refusal.checkedAt = now;
      return undefined;
    }
    this.refused++;
    return refusal.error;
  }

  /**
   * A signal that aborts with the refusal as soon as `code` is learnt exhausted, for a key-less
   * redeem waiting for an upstream slot; call `release` once it no longer waits.
   */
  waitFor(code: string): { signal: AbortSignal; release: () => void } {
    let waiting = this.#waiting.get(code);
    if (waiting === undefined) {
      waiting = { controller: new AbortController(), count: 0 };
      this.#waiting.set(code, waiting);
    }
    waiting.count++;
    const entry = waiting;
    let released = false;
    return {
      signal: entry.controller.signal,
      release: () => {
        if (released) return;
        released = true;
        entry.count--;
        if (entry.count === 0 && this.#waiting.get(code) === entry) this.#waiting.delete(code);
      },
    };
  }

  /**
   * The discount service answered a redeem of `code` (`error` undefined: redeemed; pass only
   * key-less redemptions, since a keyed one may replay a redemption made before exhaustion):
   * learn its refusal, or end it when the answer says the campaign is not exhausted.
   */
  answered(code: string, error: unknown, now = performance.now()): void {
    const info = error instanceof ConnectError ? discountInfo(error) : undefined;
    const campaignId = info?.reason === exhaustedReason ? info.metadata.campaignId : undefined;
    if (campaignId === undefined || campaignId === "") {
      // A redemption, or a refusal that shows the campaign is not exhausted any more. Throttling,
      // a user's own share, overload, outages and timeouts say nothing either way.
      if (error === undefined || forgettingReasons.has(info?.reason ?? "")) this.#refusals.delete(code);
      return;
    }
    this.#refusals.delete(code);
    this.#refusals.set(code, { campaignId, error: error as ConnectError, checkedAt: now });
    if (this.#refusals.size > this.#limits.codesMax)
      this.#refusals.delete(this.#refusals.keys().next().value!);
    const waiting = this.#waiting.get(code);
    if (waiting !== undefined) {
      this.#waiting.delete(code);
      waiting.controller.abort(error);
    }
  }

  /** Ends every refusal of a campaign (its CampaignChanged says it has slots again). */
  forgetCampaign(campaignId: string): void {
    for (const [code, refusal] of this.#refusals)
      if (refusal.campaignId === campaignId) this.#refusals.delete(code);
  }
}

/** The discount service's ErrorInfo of an answer, if it carries one. */
function discountInfo(error: ConnectError) {
  const info = error.findDetails(ErrorInfoSchema)[0];
  return info?.domain === discountDomain ? info : undefined;
}

/** Refusals that end a remembered "exhausted": the campaign is over or the code is gone. */
const forgettingReasons: ReadonlySet<string> = new Set(["INACTIVE", "UNKNOWN_CODE", "CAMPAIGN_NOT_FOUND"]);
