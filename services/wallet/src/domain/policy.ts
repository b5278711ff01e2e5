// Who may move which money. Every transfer names its caller, and the caller's policy lists
// the movements it may make: from which kind of account, to which, and as which transfer
// kinds. Anything not listed is refused, so a compromised service can move money only the way
// its own job needs (the gift service: a viewer's coins into gifts-in-transit, as a GIFT, and
// only with that viewer's own token). Callers are told apart by their verified identity
// (packages/auth), not by what they claim.
//
// Movements that need a fact (coins bought by card, a refund, a promotion credit, funding a
// promotion budget) are in no service's policy: the wallet makes them itself, as caller
// "wallet", once it has checked the fact (a signed card payment, a captured hold, a funded
// budget, an admin's request). See docs/decisions/0022-money-facts.md.
import { systemAccounts, TransferKind, type TransferKindValue } from "./ledger.ts";

/** "user" matches every user account; a system account matches only itself. */
export type AccountRule = "user" | (typeof systemAccounts)[keyof typeof systemAccounts];

export interface Movement {
  debit: AccountRule;
  credit: AccountRule;
  kinds: readonly TransferKindValue[];
  /** Only with an event of this type (the sale it pays for), checked against it (messages.ts). */
  carrying?: string;
  /** Only with the debited user's consent: their own token came with the request. */
  consent?: true;
  /** Only as the capture of a hold (CaptureHold), never as a transfer of its own. */
  captureOnly?: true;
}

export interface CallerPolicy {
  /** Transfers the caller may post, directly or as the capture of a hold. */
  movements: readonly Movement[];
  /** True when the caller may reserve, capture and void holds on user accounts. */
  holds: boolean;
  /**
   * Subjects of events the caller may publish through a transfer: a prefix when it ends with a
   * dot ("gift."), else that one subject ("wallet.boost.purchased").
   */
  eventSubjects: readonly string[];
}

/** A caller as the wallet sees it: a service by name, a person by role, or the wallet itself. */
export type Caller =
  | { kind: "service"; name: string }
  | { kind: "admin"; name: string }
  | { kind: "user"; name: string }
  | { kind: "wallet" };

const user = "user" as const;

/** Policies of the services that call the wallet; a service not listed may move nothing. */
export const servicePolicies: Readonly<Record<string, CallerPolicy>> = {
  gift: {
    movements: [
      { debit: user, credit: systemAccounts.giftsInTransit, kinds: [TransferKind.GIFT], consent: true },
      // Boosts: the buyer pays the platform, and the wallet publishes BoostPurchased with it.
      {
        debit: user,
        credit: systemAccounts.revenue,
        kinds: [TransferKind.SPEND],
        carrying: "ovation.wallet.v1.BoostPurchased",
        consent: true,
      },
    ],
    holds: false,
    // Exactly what the broker lets the wallet publish for it (packages/events permissions.ts).
    eventSubjects: ["gift.gift.sent", "wallet.boost.purchased"],
  },
  // The shop captures the holds its buyers placed (with their own tokens) as a sale, and may give
  // a captured hold back (RefundHold: only to its payer, at most the capture, once). Coins bought
  // by card are minted by the wallet against the processor's signed result, not by the shop.
  order: {
    movements: [
      {
        debit: systemAccounts.holds,
        credit: systemAccounts.revenue,
        kinds: [TransferKind.SPEND],
        captureOnly: true,
      },
    ],
    holds: true,
    eventSubjects: [],
  },
  // Discount campaigns move no money themselves: the wallet pays their redemptions out of the
  // budget an admin funded for each campaign (events/promotion-credit-consumer.ts).
};

/** Admins issue money and nothing else; the mint records which admin did it. */
const adminPolicy: CallerPolicy = {
  movements: [{ debit: systemAccounts.mint, credit: user, kinds: [TransferKind.MINT] }],
  holds: false,
  eventSubjects: [],
};

/**
 * What the wallet does on its own, each against a fact it checked first: credit hosts for gift
 * debits, settle holds, refund a captured hold, mint coins a signed card payment paid for, fund
 * a promotion budget an admin asked for, and pay a promotion credit out of its budget.
 */
const walletPolicy: CallerPolicy = {
  movements: [
    { debit: systemAccounts.giftsInTransit, credit: user, kinds: [TransferKind.EARN] },
    { debit: systemAccounts.giftsInTransit, credit: systemAccounts.revenue, kinds: [TransferKind.REVENUE] },
    { debit: user, credit: systemAccounts.holds, kinds: [TransferKind.HOLD] },
    { debit: systemAccounts.holds, credit: user, kinds: [TransferKind.RELEASE] },
    { debit: systemAccounts.revenue, credit: user, kinds: [TransferKind.REFUND] },
    { debit: systemAccounts.mint, credit: user, kinds: [TransferKind.PURCHASE] },
    { debit: systemAccounts.mint, credit: systemAccounts.promotions, kinds: [TransferKind.MINT] },
    { debit: systemAccounts.promotions, credit: user, kinds: [TransferKind.PROMOTION] },
  ],
  holds: true,
  eventSubjects: [],
};

const nobody: CallerPolicy = { movements: [], holds: false, eventSubjects: [] };

export function policyOf(caller: Caller): CallerPolicy {
  switch (caller.kind) {
    case "service":
      return Object.hasOwn(servicePolicies, caller.name) ? servicePolicies[caller.name]! : nobody;
    case "admin":
      return adminPolicy;
    case "wallet":
      return walletPolicy;
    case "user":
      return nobody;
  }
}

export const callerName = (caller: Caller): string =>
  caller.kind === "wallet" ? "wallet" : `${caller.kind}:${caller.name}`;

const matches = (rule: AccountRule, owner: string) =>
  rule === user ? owner.startsWith("user:") : owner === rule;

export interface MovementRequest {
  debitOwner: string;
  creditOwner: string;
  kind: number;
  event?: { type: string } | undefined;
  /** Set on the capture of a hold. */
  holdId?: string | undefined;
  /**
   * The user whose own token came with the request (verified), when one did: a service may
   * debit that user's account only.
   */
  consentOf?: string | undefined;
}

/** Why `caller` may not make this movement, or undefined when it may. */
export function refuseMovement(caller: Caller, transfer: MovementRequest): string | undefined {
  const candidates = policyOf(caller).movements.filter(
    (movement) =>
      matches(movement.debit, transfer.debitOwner) &&
      matches(movement.credit, transfer.creditOwner) &&
      movement.kinds.includes(transfer.kind as TransferKindValue) &&
      (movement.carrying === undefined || transfer.event?.type === movement.carrying) &&
      (movement.captureOnly === undefined || transfer.holdId !== undefined),
  );
  const kind =
    Object.entries(TransferKind).find(([, value]) => value === transfer.kind)?.[0] ?? transfer.kind;
  if (candidates.length === 0)
    return `${callerName(caller)} may not move ${transfer.debitOwner} → ${transfer.creditOwner} as ${kind}`;
  const consented = `user:${transfer.consentOf ?? ""}` === transfer.debitOwner;
  if (candidates.some((movement) => movement.consent === undefined || consented)) return undefined;
  return transfer.consentOf === undefined
    ? `${callerName(caller)} may debit ${transfer.debitOwner} as ${kind} only with that user's own token (consent_token)`
    : `the consent token is ${transfer.consentOf}'s, not the owner's of ${transfer.debitOwner}`;
}

/** Why `caller` may not publish on `subject` through the wallet, or undefined when it may. */
export function refuseEvent(caller: Caller, subject: string): string | undefined {
  return policyOf(caller).eventSubjects.some((allowed) =>
    allowed.endsWith(".") ? subject.startsWith(allowed) : subject === allowed,
  )
    ? undefined
    : `${callerName(caller)} may not publish on ${subject}`;
}

/**
 * Why `caller` may not use holds, or undefined when it may. A service reserves a user's money
 * only with that user's own token (`consentOf`, verified): a hold is the user's consent to pay.
 */
export function refuseHolds(
  caller: Caller,
  reserve?: { owner: string; consentOf: string | undefined },
): string | undefined {
  if (!policyOf(caller).holds) return `${callerName(caller)} may not use holds`;
  if (reserve === undefined || caller.kind !== "service") return undefined;
  if (`user:${reserve.consentOf ?? ""}` === reserve.owner) return undefined;
  return reserve.consentOf === undefined
    ? `${callerName(caller)} may hold ${reserve.owner}'s money only with that user's own token (consent_token)`
    : `the consent token is ${reserve.consentOf}'s, not the owner's of ${reserve.owner}`;
}
