// Who may move which money. Every transfer names its caller, and the caller's policy lists
// the movements it may make: from which kind of account, to which, and as which transfer
// kinds. Anything not listed is refused, so a compromised service can move money only the way
// its own job needs (the gift service: a viewer's coins into gifts-in-transit, as a GIFT).
// Callers are told apart by their verified identity (packages/auth), not by what they claim.
import { systemAccounts, TransferKind, type TransferKindValue } from "./ledger.ts";

/** "user" matches every user account; a system account matches only itself. */
export type AccountRule = "user" | (typeof systemAccounts)[keyof typeof systemAccounts];

export interface Movement {
  debit: AccountRule;
  credit: AccountRule;
  kinds: readonly TransferKindValue[];
  /** Only with an event of this type (the sale it pays for), checked against it (messages.ts). */
  carrying?: string;
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
      { debit: user, credit: systemAccounts.giftsInTransit, kinds: [TransferKind.GIFT] },
      // Boosts: the buyer pays the platform, and the wallet publishes BoostPurchased with it.
      {
        debit: user,
        credit: systemAccounts.revenue,
        kinds: [TransferKind.SPEND],
        carrying: "ovation.wallet.v1.BoostPurchased",
      },
    ],
    holds: false,
    eventSubjects: ["gift.", "wallet.boost.purchased"],
  },
  // Discount campaigns credit users from the promotions budget, through the wallet's own
  // consumer of their redemptions (events/promotion-credit-consumer.ts).
  discount: {
    movements: [{ debit: systemAccounts.promotions, credit: user, kinds: [TransferKind.PROMOTION] }],
    holds: false,
    eventSubjects: [],
  },
  // The shop pays with holds on the buyer's coins, captured as a sale; refunds late payments;
  // issues the coins of coin packs (through the wallet's consumer of completed orders).
  order: {
    movements: [
      { debit: systemAccounts.holds, credit: systemAccounts.revenue, kinds: [TransferKind.SPEND] },
      // A payment that arrived after its order failed goes back to the buyer.
      { debit: systemAccounts.revenue, credit: user, kinds: [TransferKind.REFUND] },
      // Coin packs paid by card: coins issued to the buyer when the order completes.
      { debit: systemAccounts.mint, credit: user, kinds: [TransferKind.PURCHASE] },
    ],
    holds: true,
    eventSubjects: ["order."],
  },
};

/** Admins issue money and nothing else; the mint records which admin did it. */
const adminPolicy: CallerPolicy = {
  movements: [{ debit: systemAccounts.mint, credit: user, kinds: [TransferKind.MINT] }],
  holds: false,
  eventSubjects: [],
};

/** What the wallet does on its own: credit hosts for gifts and settle holds. */
const walletPolicy: CallerPolicy = {
  movements: [
    { debit: systemAccounts.giftsInTransit, credit: user, kinds: [TransferKind.EARN] },
    { debit: systemAccounts.giftsInTransit, credit: systemAccounts.revenue, kinds: [TransferKind.REVENUE] },
    { debit: user, credit: systemAccounts.holds, kinds: [TransferKind.HOLD] },
    { debit: systemAccounts.holds, credit: user, kinds: [TransferKind.RELEASE] },
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

/** Why `caller` may not make this movement, or undefined when it may. */
export function refuseMovement(
  caller: Caller,
  transfer: { debitOwner: string; creditOwner: string; kind: number; event?: { type: string } | undefined },
): string | undefined {
  const allowed = policyOf(caller).movements.some(
    (movement) =>
      matches(movement.debit, transfer.debitOwner) &&
      matches(movement.credit, transfer.creditOwner) &&
      movement.kinds.includes(transfer.kind as TransferKindValue) &&
      (movement.carrying === undefined || transfer.event?.type === movement.carrying),
  );
  if (allowed) return undefined;
  const kind =
    Object.entries(TransferKind).find(([, value]) => value === transfer.kind)?.[0] ?? transfer.kind;
  return `${callerName(caller)} may not move ${transfer.debitOwner} → ${transfer.creditOwner} as ${kind}`;
}

/** Why `caller` may not publish on `subject` through the wallet, or undefined when it may. */
export function refuseEvent(caller: Caller, subject: string): string | undefined {
  return policyOf(caller).eventSubjects.some((allowed) =>
    allowed.endsWith(".") ? subject.startsWith(allowed) : subject === allowed,
  )
    ? undefined
    : `${callerName(caller)} may not publish on ${subject}`;
}

/** Why `caller` may not use holds, or undefined when it may. */
export function refuseHolds(caller: Caller): string | undefined {
  return policyOf(caller).holds ? undefined : `${callerName(caller)} may not use holds`;
}
