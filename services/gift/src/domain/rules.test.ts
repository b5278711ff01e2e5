// Proves the pure gift rules: who may send, how combos count, which leaderboard buckets apply.
import { describe, expect, it } from "vitest";
import { assertSendable, type CatalogGift, nextCombo, periodKeys, requiredVipLevel } from "./rules.ts";

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

describe("assertSendable", () => {
  it("refuses retired gifts, ended rooms, self-gifts and missing VIP levels", () => {
    expect(() => assertSendable(gift, room, "viewer", 0)).not.toThrow();
    expect(() => assertSendable(undefined, room, "viewer", 0)).toThrow("no such gift");
    expect(() => assertSendable({ ...gift, active: false }, room, "viewer", 0)).toThrow("retired");
    expect(() => assertSendable(gift, { ...room, status: 2 }, "viewer", 0)).toThrow("not live");
    expect(() => assertSendable(gift, room, "host", 0)).toThrow("themselves");
    expect(() => assertSendable({ ...gift, vipOnly: true }, room, "viewer", 0)).toThrow("needs VIP level 1");
    expect(() => assertSendable({ ...gift, minVipLevel: 3 }, room, "viewer", 2)).toThrow("needs VIP level 3");
    expect(requiredVipLevel({ vipOnly: true, minVipLevel: 5 })).toBe(5);
  });
});

describe("nextCombo", () => {
  it("counts up inside the window and restarts after it", () => {
    const t0 = new Date("2026-11-22T10:00:00Z");
    expect(nextCombo(undefined, t0, 10_000)).toBe(1);
    expect(nextCombo({ streak: 2, lastAt: t0 }, new Date(t0.getTime() + 9_999), 10_000)).toBe(3);
    expect(nextCombo({ streak: 2, lastAt: t0 }, new Date(t0.getTime() + 10_001), 10_000)).toBe(1);
  });

  it("counts a concurrent send stamped just before the previous one as part of the burst", () => {
    const t0 = new Date("2026-11-22T10:00:00Z");
    expect(nextCombo({ streak: 4, lastAt: t0 }, new Date(t0.getTime() - 3), 10_000)).toBe(5);
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
