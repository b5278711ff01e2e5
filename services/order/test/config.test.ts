// The saga's step deadline is derived from the redelivery settings, and a configured one that a
// crash and restart of one process could outlast is refused at start-up.
import { describe, expect, it } from "vitest";
import { stepTimeoutFloorMs, stepTimeoutOf } from "../src/config.ts";

/** The redelivery settings' defaults (packages/config). */
const defaults = {
  EVENTS_ACK_WAIT_MS: 30_000,
  EVENTS_RETRY_BACKOFF_MS: [1_000, 4_000, 16_000],
  SERVICE_CALL_TIMEOUT_MS: 10_000,
};

describe("the saga's step deadline", () => {
  it("outlasts a redelivery after a crash, every retry, a payment call and a restart", () => {
    expect(stepTimeoutFloorMs(defaults)).toBe(30_000 + 21_000 + 10_000 + 5_000);
    expect(stepTimeoutOf({ ...defaults, ORDER_STEP_TIMEOUT_MS: undefined })).toBe(76_000);
    expect(stepTimeoutOf({ ...defaults, ORDER_STEP_TIMEOUT_MS: 90_000 })).toBe(90_000);
  });

  it("refuses a deadline a crash could outlast, such as the ack wait itself", () => {
    expect(() => stepTimeoutOf({ ...defaults, ORDER_STEP_TIMEOUT_MS: 30_000 })).toThrow(
      /ORDER_STEP_TIMEOUT_MS=30000 is below 66000 ms/,
    );
  });
});
