// The last live score of a burst always goes out. A replica that scored gifts inside a battle's
// announcement interval owes their announcement on a timer of its own; when it stops before the
// timer fires (as a crash or a failed timer transaction would), the debounced backstop job,
// which any replica runs, announces the latest score instead of leaving the battle's channel on
// the score of the middle of the burst until its next gift. Each announcement carries the time
// of its claim, later than the previous one's by at least the interval.
import { fromBinary } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { type BattleScored, BattleScoredSchema } from "@ovation/proto/gen/ovation/pk/v1/events_pb.ts";
import { BattleMode, PkService, TiePolicy } from "@ovation/proto/gen/ovation/pk/v1/pk_pb.ts";
import { waitFor } from "@ovation/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { liveScoreBackstopMs } from "../src/app/live-scores.ts";
import { type PkHarness, startPkHarness } from "./helpers.ts";

/** Long enough that the second gift is surely scored inside the first announcement's interval. */
const intervalMs = 5_000;
let h: PkHarness;

beforeAll(async () => {
  h = await startPkHarness({ PK_LIVE_SCORE_INTERVAL_MS: String(intervalMs) });
});
afterAll(() => h?.close());

/** The last BattleScored in the PK stream, as a consumer that reads them all ends up showing. */
async function lastScored(): Promise<BattleScored | undefined> {
  const message = await h.bus.jsm.streams
    .getMessage(h.bus.names.stream("PK"), { last_by_subj: h.bus.names.subject("pk.battle.scored") })
    .catch(() => null);
  return message === null ? undefined : fromBinary(BattleScoredSchema, message.data);
}

const points = (scored: BattleScored | undefined) => scored?.sides.map((s) => s.points).join(":");

describe("live scores", () => {
  it("announce the last score of a burst although the replica that owed it stopped first", async () => {
    const token = (id: string) => h.env.token(id, ["user", "host"]);
    await h.goLive("lsa");
    await h.goLive("lsb");
    const pk = async (id: string) => h.client(PkService, h.replicas[0]!.server.url, await token(id));
    const created = await (await pk("lsa")).createBattle({
      mode: BattleMode.SOLO,
      sideA: ["lsa"],
      sideB: ["lsb"],
      durationSeconds: 600,
      tiePolicy: TiePolicy.DRAW,
      idempotencyKey: crypto.randomUUID(),
    });
    const battleId = created.battle!.id;
    await (await pk("lsb")).acceptBattle({ battleId });

    await h.gift({ hostId: "lsa", senderId: "v1", points: 30n, at: new Date() });
    const first = await waitFor(async () => {
      const scored = await lastScored();
      return points(scored) === "30:0" ? scored : undefined;
    });
    await h.gift({ hostId: "lsb", senderId: "v2", points: 80n, at: new Date() });
    const scorer = h.replicas[0]!;
    await waitFor(async () => {
      const view = await scorer.store.view(scorer.store.fork(), battleId);
      return view?.battle.scoreB === 80n;
    });
    // Scored inside the interval: the scoring replica owes the announcement, on its own timer.
    const firstClaimedAt = timestampDate(first!.scoredTime!).getTime();
    expect(Date.now()).toBeLessThan(firstClaimedAt + intervalMs);
    expect(points(await lastScored())).toBe("30:0");

    await scorer.close();
    await h.startReplica();
    const last = await waitFor(
      async () => {
        const scored = await lastScored();
        return points(scored) === "30:80" ? scored : undefined;
      },
      { timeoutMs: intervalMs + liveScoreBackstopMs + 10_000, what: "the burst's last score, 30:80" },
    );
    expect(last!.battleId).toBe(battleId);
    expect(timestampDate(last!.scoredTime!).getTime()).toBeGreaterThanOrEqual(firstClaimedAt + intervalMs);
  });
});
