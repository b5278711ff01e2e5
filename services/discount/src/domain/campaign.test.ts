import { describe, expect, it } from "vitest";
import { generateCode, hashCode, looksSingleUse, normalizeCode, singleUseCodeLength } from "./campaign.ts";

describe("codes", () => {
  it("normalise case, spaces and dashes", () => {
    expect(normalizeCode(" nowruz-1405 ")).toBe("NOWRUZ1405");
    expect(hashCode("abcd-efgh")).toEqual(hashCode("ABCDEFGH"));
  });

  it("generate 16 unambiguous characters, different every time", () => {
    const codes = Array.from({ length: 2_000 }, generateCode);
    expect(new Set(codes).size).toBe(codes.length);
    for (const code of codes) {
      expect(code).toHaveLength(singleUseCodeLength);
      expect(code).not.toMatch(/[ILOU]/);
      expect(looksSingleUse(code)).toBe(true);
    }
    expect(looksSingleUse("NOWRUZ1405")).toBe(false);
  });
});
