import { describe, expect, it } from "vitest";
import {
  childTrace,
  currentTrace,
  formatTraceparent,
  parseTraceparent,
  traceHeaders,
  withTrace,
} from "./trace.ts";

const sample = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

describe("trace context", () => {
  it("parses and formats W3C traceparent, refusing what the spec calls invalid", () => {
    expect(parseTraceparent(sample)).toEqual({
      traceId: "4bf92f3577b34da6a3ce929d0e0e4736",
      spanId: "00f067aa0ba902b7",
      sampled: true,
    });
    expect(formatTraceparent(parseTraceparent(sample)!)).toBe(sample);
    for (const bad of [
      undefined,
      "",
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
      "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
      "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
      "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
      "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    ]) {
      expect(parseTraceparent(bad), String(bad)).toBeUndefined();
    }
  });

  it("runs work as a new hop of the given trace, or of a new trace, and scopes it to that work", async () => {
    expect(currentTrace()).toBeUndefined();
    expect(traceHeaders()).toEqual({});
    const seen = await withTrace(sample, async () => {
      await new Promise((resolve) => setTimeout(resolve, 1));
      return currentTrace();
    });
    expect(seen?.traceId).toBe("4bf92f3577b34da6a3ce929d0e0e4736");
    expect(seen?.spanId).not.toBe("00f067aa0ba902b7");
    expect(currentTrace()).toBeUndefined();
    const fresh = withTrace("garbage", () => traceHeaders().traceparent);
    expect(parseTraceparent(fresh)?.traceId).toMatch(/^[0-9a-f]{32}$/);
    expect(childTrace().traceId).not.toBe(childTrace().traceId);
  });
});
