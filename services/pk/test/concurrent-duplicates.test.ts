// Identical keyed requests sent at the same moment (issue 19: 30 of 60 concurrent
// CreateBonusWindow calls with one idempotency key answered 409 "already exists"). This proves
// that a duplicate arriving while the first is still in flight waits for the first's answer and
// returns it: every caller gets the same bonus window (with or without a start time: an omitted
// start means "now" and must not make two identical requests differ) or the same invitation,
// and exactly one is stored.
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { BattleMode, PkService } from "@ovation/proto/gen/ovation/pk/v1/pk_pb.ts";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type PkHarness, startPkHarness } from "./helpers.ts";

/** As many identical calls as the fault run sent at once. */
const concurrentCalls = 60;

let h: PkHarness;
const tokens: Record<string, string> = {};
const pk = (who: string) => h.client(PkService, h.replicas[0]!.server.url, tokens[who]);

beforeAll(async () => {
  h = await startPkHarness();
  tokens.root = await h.env.token("root", ["admin"]);
});
afterAll(() => h?.close());

/** Sends the same call `concurrentCalls` times at once; the refusals, and the ids answered. */
async function atOnce<T>(send: () => Promise<T>, idOf: (answer: T) => string) {
  const answers = await Promise.allSettled(Array.from({ length: concurrentCalls }, send));
  return {
    refusals: answers.flatMap((answer) =>
      answer.status === "rejected" ? [String((answer.reason as Error).message)] : [],
    ),
    ids: [
      ...new Set(answers.flatMap((answer) => (answer.status === "fulfilled" ? [idOf(answer.value)] : []))),
    ],
  };
}

const stored = async (table: "bonus_windows" | "battles", createdBy: string, key: string) =>
  (
    await h.replicas[0]!.orm.em.fork().execute<{ id: string }[]>(
      `select id from ${table} where created_by = ? and idempotency_key = ?`,
      [createdBy, key],
    )
  ).map((row) => row.id);

describe("identical bonus windows created at the same moment", () => {
  it.each([
    ["with a start time", new Date(Date.now() + 60_000)],
    ["starting now", undefined],
  ])("all get the first's window, %s", async (_, startTime) => {
    const request = {
      multiplier: 2,
      startTime: startTime === undefined ? undefined : timestampFromDate(startTime),
      durationSeconds: 60,
      giftId: "rose",
      idempotencyKey: crypto.randomUUID(),
    };
    const { refusals, ids } = await atOnce(
      () => pk("root").createBonusWindow(request),
      (answer) => answer.window!.id,
    );
    expect(refusals).toEqual([]);
    expect(ids).toHaveLength(1);
    expect(await stored("bonus_windows", "root", request.idempotencyKey)).toEqual(ids);
  });
});

describe("identical invitations sent at the same moment", () => {
  it("all get the first's battle", async () => {
    for (const host of ["d1", "d2"]) {
      tokens[host] = await h.env.token(host, ["user", "host"]);
      await h.goLive(host);
    }
    const request = {
      mode: BattleMode.SOLO,
      sideA: ["d1"],
      sideB: ["d2"],
      idempotencyKey: crypto.randomUUID(),
    };
    const { refusals, ids } = await atOnce(
      () => pk("d1").createBattle(request),
      (answer) => answer.battle!.id,
    );
    expect(refusals).toEqual([]);
    expect(ids).toHaveLength(1);
    expect(await stored("battles", "d1", request.idempotencyKey)).toEqual(ids);
  });
});
