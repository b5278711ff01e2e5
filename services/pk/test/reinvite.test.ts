// Issue 19: a host could keep another host busy forever by re-inviting after every expiry or
// decline, because a pending invitation made every invited host busy. This proves that an
// invitation holds no one who has not answered it (the invited host may start or accept another
// battle, which cancels the invitations they leave unanswered), and that an inviter whom a host
// turned down, by declining or by letting the invitation expire, must wait for the cool-down
// before inviting that host again: RESOURCE_EXHAUSTED with when, for that pair only.
import { ConnectError } from "@connectrpc/connect";
import { BattleMode, BattleState, PkService } from "@ovation/proto/gen/ovation/pk/v1/pk_pb.ts";
import { reasonOf, retryPushbackHeader } from "@ovation/server";
import { waitFor } from "@ovation/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { codeOf, type PkHarness, startPkHarness } from "./helpers.ts";

/** Short enough to wait out in a test, long enough that an immediate retry is surely inside it. */
const cooldownSeconds = 4;

let h: PkHarness;
const tokens: Record<string, string> = {};
const pk = (who: string) => h.client(PkService, h.replicas[0]!.server.url, tokens[who]);

async function liveHosts(...ids: string[]) {
  for (const id of ids) {
    tokens[id] = await h.env.token(id, ["user", "host"]);
    await h.goLive(id);
  }
}

const invite = (from: string, to: string, idempotencyKey: string = crypto.randomUUID()) =>
  pk(from).createBattle({ mode: BattleMode.SOLO, sideA: [from], sideB: [to], idempotencyKey });

async function battle(id: string) {
  return (await pk("root").getBattle({ battleId: id })).battle!;
}

/** The refusal of a call, as a client sees it: code, reason, and when to come back. */
async function refusal(call: Promise<unknown>) {
  const error = await call.then(
    () => undefined,
    (e: unknown) => ConnectError.from(e),
  );
  if (error === undefined) return undefined;
  return {
    code: await codeOf(Promise.reject(error)),
    reason: reasonOf(error),
    retryAfterMs: Number(error.metadata.get(retryPushbackHeader)),
    message: error.rawMessage,
  };
}

beforeAll(async () => {
  h = await startPkHarness({
    PK_INVITE_TTL_SECONDS: "2",
    PK_REINVITE_COOLDOWN_SECONDS: String(cooldownSeconds),
  });
  tokens.root = await h.env.token("root", ["admin"]);
});
afterAll(() => h?.close());

describe("re-inviting a host who turned an invitation down", () => {
  it("waits out the cool-down after a decline or an expiry, for that inviter and host only", async () => {
    await liveHosts("r1", "r2", "r3");

    const declined = (await invite("r1", "r2")).battle!;
    await pk("r2").declineBattle({ battleId: declined.id });
    const refused = await refusal(invite("r1", "r2"));
    expect(refused).toMatchObject({ code: "ResourceExhausted", reason: "invite_cooldown" });
    expect(refused!.retryAfterMs).toBeGreaterThan(0);
    expect(refused!.retryAfterMs).toBeLessThanOrEqual(cooldownSeconds * 1_000);
    expect(refused!.message).toMatch(
      /r2 turned down your last invitation; you may invite them again in \d+ s/,
    );

    // Other inviters, and the other direction, are not affected; a withdrawn invitation (the
    // inviter cancelled it) starts no cool-down.
    for (const [from, to] of [
      ["r3", "r2"],
      ["r3", "r2"],
      ["r2", "r1"],
    ] as const) {
      const pending = (await invite(from, to)).battle!;
      await pk(from).cancelBattle({ battleId: pending.id });
    }

    // Once the cool-down is over, r1 may invite r2 again.
    const again = await waitFor(() => invite("r1", "r2").catch(() => undefined), {
      timeoutMs: (cooldownSeconds + 5) * 1_000,
      intervalMs: 250,
      what: "the cool-down to end",
    });
    expect(again.battle?.state).toBe(BattleState.PENDING);
    await pk("r1").cancelBattle({ battleId: again.battle!.id });

    // Letting an invitation expire turns it down too.
    const ignored = (await invite("r1", "r3")).battle!;
    const expired = await waitFor(
      async () => {
        const b = await battle(ignored.id);
        return b.state === BattleState.CANCELLED ? b : undefined;
      },
      { what: "the invitation to expire" },
    );
    expect(expired.reason).toBe("the invitation expired");
    expect(await refusal(invite("r1", "r3"))).toMatchObject({
      code: "ResourceExhausted",
      reason: "invite_cooldown",
    });
  });
});

describe("a host with invitations they have not answered", () => {
  it("may accept another battle or start their own, which cancels those invitations", async () => {
    await liveHosts("f1", "f2", "f3", "f4", "f5");

    // f2 is invited by f1 and, at the same time, by f3: the first invitation holds no one.
    const fromF1 = (await invite("f1", "f2")).battle!;
    const fromF3 = (await invite("f3", "f2")).battle!;
    expect((await pk("f2").acceptBattle({ battleId: fromF3.id })).battle?.state).toBe(BattleState.ACTIVE);
    const left = await battle(fromF1.id);
    expect([left.state, left.reason]).toEqual([BattleState.CANCELLED, "f2 joined another battle"]);
    // f2 is busy now, not in a cool-down: f2 did not turn f1 down.
    expect(await refusal(invite("f1", "f2"))).toMatchObject({
      code: "FailedPrecondition",
      reason: "host_busy",
    });
    expect(await codeOf(invite("f4", "f2"))).toBe("FailedPrecondition");

    // f1 is invited by f4 and invites f5 instead: f4's invitation ends at once.
    const fromF4 = (await invite("f4", "f1")).battle!;
    expect((await invite("f1", "f5")).battle?.state).toBe(BattleState.PENDING);
    const withdrawn = await battle(fromF4.id);
    expect([withdrawn.state, withdrawn.reason]).toEqual([BattleState.CANCELLED, "f1 joined another battle"]);
  });

  it("loses every one of them when their room ends", async () => {
    await liveHosts("g1", "g2");
    tokens.g3 = await h.env.token("g3", ["user", "host"]);
    const room = await h.goLive("g3");
    const invitations = [(await invite("g1", "g3")).battle!, (await invite("g2", "g3")).battle!];
    await h.endLive("g3", room);
    for (const invitation of invitations) {
      const gone = await waitFor(
        async () => {
          const b = await battle(invitation.id);
          return b.state === BattleState.CANCELLED ? b : undefined;
        },
        { what: `invitation ${invitation.id} cancelled` },
      );
      expect(gone.reason).toBe("g3 ended their live room");
    }
  });
});
