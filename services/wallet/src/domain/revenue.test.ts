// Proves the revenue split conserves every coin and does not depend on batching.
import { describe, expect, it } from "vitest";
import { creditsOf, splitGift } from "./revenue.ts";

describe("splitGift", () => {
  it("gives the host its share rounded down and the platform the rest", () => {
    expect(splitGift(999n, 7000)).toEqual({ host: 699n, platform: 300n });
    expect(splitGift(1n, 7000)).toEqual({ host: 0n, platform: 1n });
    expect(() => splitGift(1n, 10_001)).toThrow(RangeError);
  });

  it("sums to the same totals whether gifts come in one batch or many", () => {
    const gifts = [1n, 7n, 99n, 1234n, 5n].map((total, i) => ({ hostId: i % 2 ? "a" : "b", total }));
    const together = creditsOf(gifts, 6500);
    const apart = gifts.map((g) => creditsOf([g], 6500));
    const hostSum = (c: { hosts: { amount: bigint }[] }) => c.hosts.reduce((s, h) => s + h.amount, 0n);
    expect(hostSum(together)).toBe(apart.reduce((s, c) => s + hostSum(c), 0n));
    expect(hostSum(together) + together.platform).toBe(1346n);
  });
});
