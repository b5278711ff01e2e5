import { fromBinary } from "@bufbuild/protobuf";
import { BattleScoredSchema } from "@ovation/proto/gen/ovation/pk/v1/events_pb.ts";
import { BattleMode, PkService, TiePolicy } from "@ovation/proto/gen/ovation/pk/v1/pk_pb.ts";
import { waitFor } from "@ovation/testkit";
import { afterAll, beforeAll, it } from "vitest";
import { type PkHarness, startPkHarness } from "./helpers.ts";

let h: PkHarness;
beforeAll(async () => {
  h = await startPkHarness();
  if (process.env.REPLICAS === "2") await h.startReplica();
});
afterAll(() => h?.close());

it("scratch", async () => {
  const t = async (id: string) => h.env.token(id, ["user", "host"]);
  const a = await t("a1");
  const b = await t("b1");
  await h.goLive("a1");
  await h.goLive("b1");
  const pk = (tok: string) => h.client(PkService, h.replicas[0]!.server.url, tok);
  const created = await pk(a).createBattle({
    mode: BattleMode.SOLO,
    sideA: ["a1"],
    sideB: ["b1"],
    durationSeconds: 300,
    tiePolicy: TiePolicy.DRAW,
    idempotencyKey: "x",
  });
  const id = created.battle!.id;
  await pk(b).acceptBattle({ battleId: id });
  const stream = h.bus.names.stream("PK");
  const subject = h.bus.names.subject("pk.battle.scored");
  let bad = 0;
  for (let round = 0; round < 40; round++) {
    const n = 2 + Math.floor(Math.random() * 6);
    const sends = [];
    for (let i = 0; i < n; i++) {
      sends.push(
        h.gift({ hostId: Math.random() < 0.5 ? "a1" : "b1", senderId: `v${i}`, points: 10n, at: new Date() }),
      );
      if (Math.random() < 0.5) await new Promise((r) => setTimeout(r, Math.random() * 80));
    }
    await Promise.all(sends);
    const db = async () =>
      (await pk(a).getBattle({ battleId: id })).battle!.sides.map((s) => s.points).join(":");
    let want = "";
    await waitFor(
      async () => {
        const x = await db();
        const same = x === want;
        want = x;
        return same && x;
      },
      { intervalMs: 150 },
    );
    let last = "";
    try {
      await waitFor(
        async () => {
          const m = await h.bus.jsm.streams.getMessage(stream, { last_by_subj: subject });
          last = fromBinary(BattleScoredSchema, m!.data)
            .sides.map((s) => s.points)
            .join(":");
          return last === want;
        },
        { timeoutMs: 2000 },
      );
    } catch {
      bad++;
      console.log(`round ${round}: db ${want} last published ${last}`);
    }
  }
  console.log(`bad rounds: ${bad}`);
}, 600_000);
