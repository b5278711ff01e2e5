// Proves the pure ledger rules: fingerprints tell retries from reused keys, holds move only
// from PENDING and repeat safely, captures never exceed what is held.
import { describe, expect, it } from "vitest";
import { HoldStatus, holdTransition, requestFingerprint, splitCapture, TransferKind } from "./ledger.ts";

const base = {
  debitOwner: "user:a",
  creditOwner: "system:gifts-in-transit",
  asset: "COIN",
  amount: 10n,
  kind: TransferKind.GIFT,
  reference: "r",
  metadata: { b: "2", a: "1" },
};

describe("requestFingerprint", () => {
  it("ignores metadata order but not amounts or events", () => {
    const same = requestFingerprint({ ...base, metadata: { a: "1", b: "2" } });
    expect(requestFingerprint(base).equals(same)).toBe(true);
    expect(requestFingerprint({ ...base, amount: 11n }).equals(same)).toBe(false);
    const withEvent = {
      ...base,
      event: { subject: "gift.gift.sent", type: "T", payload: new Uint8Array([1]) },
    };
    expect(requestFingerprint(withEvent).equals(same)).toBe(false);
  });
});

describe("holdTransition", () => {
  it("moves PENDING once and treats a repeat as done", () => {
    expect(holdTransition(HoldStatus.PENDING, "capture")).toEqual({ next: HoldStatus.CAPTURED });
    expect(holdTransition(HoldStatus.VOIDED, "void")).toEqual({ already: true });
    expect(holdTransition(HoldStatus.CAPTURED, "void")).toEqual({
      refused: "hold is captured, cannot void",
      status: "captured",
    });
    expect(holdTransition(HoldStatus.EXPIRED, "capture")).toEqual({
      refused: "hold is expired, cannot capture",
      status: "expired",
    });
  });
});

describe("splitCapture", () => {
  it("captures all by default and releases the rest of a partial capture", () => {
    expect(splitCapture(100n, 0n)).toEqual({ captured: 100n, released: 0n });
    expect(splitCapture(100n, 30n)).toEqual({ captured: 30n, released: 70n });
    expect(() => splitCapture(100n, 101n)).toThrow(RangeError);
  });
});
