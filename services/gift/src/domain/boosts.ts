// Boost rules: limits, targets and how a room is ranked. No I/O.
import { BoostTargetType } from "@ovation/proto/gen/ovation/wallet/v1/events_pb.ts";

export { BoostTargetType };
export type BoostTargetTypeValue = (typeof BoostTargetType)[keyof typeof BoostTargetType];

export const boostLimits = {
  amountMin: 10n,
  amountMax: 1_000_000n,
  durationHoursMin: 1,
  /**
   * Well inside the streams' 7-day retention: every boost that can still be active is in the
   * WALLET stream, so replaying the stream always rebuilds the ranking exactly.
   */
  durationHoursMax: 72,
  discoverPageDefault: 20,
  discoverPageMax: 100,
} as const;

/** Gifts count toward a room's activity for this long. */
export const activityWindowMs = 3_600_000;

export type PkSide = "A" | "B";

/** "<battle id>:A" → its battle and side; undefined when it is not of that form. */
export function parsePkSideTarget(targetId: string): { battleId: string; side: PkSide } | undefined {
  const match = /^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}):([AB])$/i.exec(targetId);
  return match === null
    ? undefined
    : { battleId: match[1]!.toLowerCase(), side: match[2]!.toUpperCase() as PkSide };
}

/**
 * The one spelling of a target, so a boost always adds to the same ranking row and a retry
 * matches its first request: room ids in lower case, PK sides as "<battle id in lower case>:A".
 * User ids are case-sensitive and stay as given.
 */
export function canonicalTarget(type: BoostTargetTypeValue, targetId: string): string {
  if (type === BoostTargetType.ROOM) return targetId.toLowerCase();
  if (type === BoostTargetType.PK_SIDE) {
    const side = parsePkSideTarget(targetId);
    return side === undefined ? targetId : `${side.battleId}:${side.side}`;
  }
  return targetId;
}

export function expiryOf(start: Date, durationHours: number): Date {
  return new Date(start.getTime() + durationHours * 3_600_000);
}
