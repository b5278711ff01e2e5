// Reconnect delays double from the first step up to the cap, and the jitter keeps each within
// [step / 2, step]: growing, bounded, and spread so clients do not come back in one wave.
import { describe, expect, it } from "vitest";
import { backoffDelayMs } from "./backoff.ts";

const options = { initialDelayMs: 100, maxDelayMs: 1_000 };

describe("backoffDelayMs", () => {
  it("doubles the step per attempt up to the cap, with jitter over its upper half", () => {
    const steps = [100, 200, 400, 800, 1_000, 1_000];
    steps.forEach((step, attempt) => {
      expect(backoffDelayMs(attempt, options, () => 0)).toBe(step / 2);
      expect(backoffDelayMs(attempt, options, () => 0.999_999)).toBe(step);
    });
  });

  it("stays capped for any number of attempts", () => {
    expect(backoffDelayMs(10_000, options, () => 0.5)).toBe(750);
    expect(backoffDelayMs(Number.MAX_SAFE_INTEGER, options, () => 0.999_999)).toBe(1_000);
  });

  it("spreads clients: the same attempt gives different delays", () => {
    const delays = new Set(Array.from({ length: 50 }, () => backoffDelayMs(3, options)));
    expect(delays.size).toBeGreaterThan(10);
    for (const delay of delays) expect(delay).toBeGreaterThanOrEqual(400);
  });

  it("refuses settings that cannot back off", () => {
    expect(() => backoffDelayMs(0, { initialDelayMs: 0 })).toThrow(RangeError);
    expect(() => backoffDelayMs(0, { initialDelayMs: 500, maxDelayMs: 100 })).toThrow(RangeError);
  });
});
