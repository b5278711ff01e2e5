// Proves the pure gift rules: who may send and which leaderboard buckets apply.
import { describe, expect, it } from "vitest";
import { type CatalogGift, periodKeys, requiredVipLevel, sendRefusal } from "./rules.ts";

const gift: CatalogGift = {
  id: "rose",
  name: "Rose",
  price: 10n,
  pkPoints: 10n,
  vipOnly: false,
  minVipLevel: 0,
  animationKey: "rose",
  active: true,
  updatedAt: new Date(),
};
const room = { id: "r", hostId: "host", status: 1 };

describe("sendRefusal", () => {
  const refusal = (...args: Parameters<typeof sendRefusal>) => sendRefusal(...args)?.message;

  it("refuses unknown and retired gifts, ended rooms, self-gifts and missing VIP levels", () => {
    expect(refusal(gift, room, "viewer", 0)).toBeUndefined();
    expect(refusal(undefined, room, "viewer", 0)).toBe("no such gift");
    expect(refusal({ ...gift, active: false }, room, "viewer", 0)).toContain("retired");
    expect(refusal(gift, { ...room, status: 2 }, "viewer", 0)).toContain("not live");
    expect(refusal(gift, room, "host", 0)).toContain("themselves");
    expect(refusal({ ...gift, vipOnly: true }, room, "viewer", 0)).toContain("needs VIP level 1");
    expect(refusal({ ...gift, minVipLevel: 3 }, room, "viewer", 2)).toContain("needs VIP level 3");
    expect(requiredVipLevel({ vipOnly: true, minVipLevel: 5 })).toBe(5);
  });

  it("leaves a room this replica has not heard of to the claim", () => {
    expect(refusal(gift, undefined, "viewer", 0)).toBeUndefined();
  });
});

describe("periodKeys", () => {
  it("uses the UTC day and the Monday of the ISO week", () => {
    expect(periodKeys(new Date("2026-11-22T23:59:00Z"))).toEqual({
      day: "day:2026-11-22",
      week: "week:2026-11-16",
      all: "all",
    });
    expect(periodKeys(new Date("2026-11-16T00:00:00Z")).week).toBe("week:2026-11-16");
  });
});
