// Identical CreateBonusWindow requests sent at the same moment (issue 19: 30 of 60 concurrent
// calls with one idempotency key answered 409 "already exists"). This proves that a duplicate
// arriving while the first is still in flight waits for the first's answer and returns it, so
// every caller gets the same window and exactly one is stored, with or without a start time
// (an omitted start means "now" and must not make two identical requests differ).
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { PkService } from "@ovation/proto/gen/ovation/pk/v1/pk_pb.ts";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type PkHarness, startPkHarness } from "./helpers.ts";

/** As many identical calls as the fault run sent at once. */
const concurrentCalls = 60;

let h: PkHarness;
let adminToken: string;

beforeAll(async () => {
  h = await startPkHarness();
  adminToken = await h.env.token("root", ["admin"]);
});
afterAll(() => h?.close());

async function sendAtOnce(startTime: Date | undefined) {
  const admin = h.client(PkService, h.replicas[0]!.server.url, adminToken);
  const request = {
    multiplier: 2,
    startTime: startTime === undefined ? undefined : timestampFromDate(startTime),
    durationSeconds: 60,
    giftId: "rose",
    idempotencyKey: crypto.randomUUID(),
  };
  const answers = await Promise.allSettled(
    Array.from({ length: concurrentCalls }, () => admin.createBonusWindow(request)),
  );
  const stored = await h.replicas[0]!.orm.em.fork().execute(
    "select id from bonus_windows where created_by = ? and idempotency_key = ?",
    ["root", request.idempotencyKey],
  );
  return { answers, stored };
}

describe("identical bonus windows created at the same moment", () => {
  it.each([
    ["with a start time", new Date(Date.now() + 60_000)],
    ["starting now", undefined],
  ])("all get the first's window, %s", async (_, startTime) => {
    const { answers, stored } = await sendAtOnce(startTime);
    const refusals = answers.flatMap((answer) =>
      answer.status === "rejected" ? [String((answer.reason as Error).message)] : [],
    );
    expect(refusals).toEqual([]);
    const windows = answers.flatMap((answer) => (answer.status === "fulfilled" ? [answer.value.window!] : []));
    expect(new Set(windows.map((window) => window.id)).size).toBe(1);
    expect(new Set(windows.map((window) => window.startTime?.seconds)).size).toBe(1);
    expect(stored.map((row) => row.id)).toEqual([windows[0]!.id]);
  });
});
