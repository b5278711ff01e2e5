// PK battles. Without an id: the battles of the hosts who are live now. With one: the battle
// live on the `pk:<id>` channel: the score bar moves with every `pk.scored` (at most 10 a second
// per battle), the countdown runs to the end time, bonus windows in force are marked, and the
// settled result names the winner and each side's MVP.
import { type MessageOf, ok, type Schema } from "@ovation/client";
import { useEffect, useState } from "preact/hooks";
import { coins, countdown, enumLabel, shortId, timeLabel } from "../format.ts";
import { useChannel, usePoll } from "../live.ts";
import { href } from "../router.ts";
import { isAdmin, useSession } from "../session.ts";

type Battle = Schema<"ovation.pk.v1.Battle">;
type SideScore = Schema<"ovation.pk.v1.SideScore">;
type BonusWindow = Schema<"ovation.pk.v1.BonusWindow">;
type PkMessage = MessageOf<`pk:${string}`>;

const listRefreshMs = 3_000;
const battlesPerHost = 5;
const clockTickMs = 250;

export function PkPage({ battleId }: { battleId: string | undefined }) {
  return battleId === undefined ? <BattleList /> : <BattleView battleId={battleId} />;
}

function BattleList() {
  const { client } = useSession();
  const battles = usePoll(
    async () => {
      const live = await ok(client.api.GET("/api/discover", { params: { query: { pageSize: 50 } } }));
      const hosts = [...new Set((live.entries ?? []).map((entry) => entry.room?.hostId ?? ""))].filter(
        Boolean,
      );
      const pages = await Promise.all(
        hosts.map((hostId) =>
          ok(client.api.GET("/api/pk", { params: { query: { hostId, pageSize: battlesPerHost } } })),
        ),
      );
      const byId = new Map<string, Battle>();
      for (const battle of pages.flatMap((page) => page.battles ?? [])) byId.set(battle.id ?? "", battle);
      return [...byId.values()].sort((a, b) => (b.createTime ?? "").localeCompare(a.createTime ?? ""));
    },
    listRefreshMs,
    [client],
  );
  return (
    <section>
      <h1>PK battles</h1>
      <p class="hint">Battles of the hosts who are live now, newest first.</p>
      {battles.error === undefined ? null : <p class="error">{battles.error}</p>}
      {battles.value?.length === 0 ? <p>No battle yet.</p> : null}
      <table data-testid="battles">
        <tbody>
          {(battles.value ?? []).map((battle) => (
            <tr key={battle.id}>
              <td>
                <a href={href("pk", battle.id)}>{sideNames(battle).join(" vs ")}</a>
              </td>
              <td>{enumLabel(battle.state, "BATTLE_STATE")}</td>
              <td>{scoreLine(battle.sides ?? [])}</td>
              <td>{timeLabel(battle.createTime)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}

function BattleView({ battleId }: { battleId: string }) {
  const { client, session } = useSession();
  const [battle, setBattle] = useState<Battle | undefined>(undefined);
  const [sides, setSides] = useState<SideScore[]>([]);
  const [endTime, setEndTime] = useState<string | undefined>(undefined);
  const [error, setError] = useState<string | undefined>(undefined);
  const now = useClock();

  const load = async () => {
    try {
      const loaded = (await ok(client.api.GET("/api/pk/{battleId}", { params: { path: { battleId } } })))
        .battle;
      setBattle(loaded);
      setSides(loaded?.sides ?? []);
      setEndTime(loaded?.endTime);
      setError(undefined);
    } catch (failure) {
      setError(String(failure));
    }
  };
  useEffect(() => void load(), [client, battleId]);
  const windows = usePoll(
    () =>
      isAdmin(session)
        ? ok(client.api.GET("/api/admin/pk/bonus-windows")).then((answer) => answer.windows ?? [])
        : Promise.resolve([] as BonusWindow[]),
    0,
    [client, session],
  );
  const channel = useChannel(
    client,
    `pk:${battleId}`,
    (message: PkMessage) => {
      if (message.type === "pk.scored") {
        setSides(message.data.sides ?? []);
        setEndTime(message.data.endTime);
      } else if (message.type !== "pk.boosted") {
        // A change of state carries the whole battle.
        setBattle(message.data);
        setSides(message.data.sides ?? []);
        setEndTime(message.data.endTime);
      } else {
        void load();
      }
    },
    () => void load(),
  );

  if (battle === undefined)
    return <section>{error === undefined ? <p>Loading…</p> : <p class="error">{error}</p>}</section>;
  const names = sideNames(battle);
  const points = (side: string) => Number(sides.find((one) => one.side === side)?.points ?? "0");
  const [a, b] = [points("SIDE_A"), points("SIDE_B")];
  const shareA = a + b === 0 ? 50 : (a / (a + b)) * 100;
  const running = battle.state === "BATTLE_STATE_ACTIVE" || battle.state === "BATTLE_STATE_BONUS_ROUND";
  const remainingMs = endTime === undefined ? 0 : new Date(endTime).getTime() - now;
  const relevant = (windows.value ?? []).filter(
    (window) => window.battleId === "" || window.battleId === battleId,
  );
  return (
    <section>
      <h1>
        {names[0]} vs {names[1]}
      </h1>
      <p class="hint">
        Battle <code title={battleId}>{shortId(battleId)}</code> ·{" "}
        <span data-testid="battle-state">{enumLabel(battle.state, "BATTLE_STATE")}</span>
        {" · "}
        <span data-testid="channel-state">scores {channel}</span>
      </p>
      <div class="score-bar" data-testid="score-bar">
        <div class="side-a" style={{ width: `${shareA}%` }} data-testid="score-a">
          {names[0]} {a}
        </div>
        <div class="side-b" style={{ width: `${100 - shareA}%` }} data-testid="score-b">
          {b} {names[1]}
        </div>
      </div>
      {running ? (
        <p class="countdown" data-testid="countdown">
          {battle.state === "BATTLE_STATE_BONUS_ROUND" ? "Bonus round: " : ""}
          {countdown(remainingMs)} left
        </p>
      ) : null}
      {battle.result !== undefined && battle.result !== "BATTLE_RESULT_UNSPECIFIED" ? (
        <p class="result" data-testid="result">
          {battle.result === "BATTLE_RESULT_DRAW"
            ? "Draw"
            : `${battle.result === "BATTLE_RESULT_SIDE_A" ? names[0] : names[1]} won`}
          {battle.state === "BATTLE_STATE_SETTLED" ? " (settled)" : ""}
          {battle.reason === "" || battle.reason === undefined ? "" : `: ${battle.reason}`}
        </p>
      ) : null}
      <div class="columns">
        {["SIDE_A", "SIDE_B"].map((side, index) => {
          const score = sides.find((one) => one.side === side);
          return (
            <div key={side} data-testid={`side-${side === "SIDE_A" ? "a" : "b"}`}>
              <h2>{names[index]}</h2>
              <p>
                MVP: <strong>{score?.mvpUserId || "—"}</strong>
                {score?.boosts ? ` · ${score.boosts} boosts (${coins(score.boostCoins)})` : ""}
                {score?.latePoints && score.latePoints !== "0" ? ` · ${score.latePoints} late points` : ""}
              </p>
              <ol>
                {(score?.topSupporters ?? []).map((supporter) => (
                  <li key={supporter.userId}>
                    {supporter.userId}: {supporter.points}
                  </li>
                ))}
              </ol>
            </div>
          );
        })}
      </div>
      <h2>Bonus windows</h2>
      {isAdmin(session) ? null : <p class="hint">Bonus windows are listed for admins.</p>}
      <ul data-testid="bonus-windows">
        {relevant.map((window) => {
          const inForce =
            new Date(window.startTime ?? 0).getTime() <= now && now < new Date(window.endTime ?? 0).getTime();
          return (
            <li key={window.id} class={inForce ? "in-force" : undefined}>
              ×{window.multiplier} {window.giftId ? `for ${window.giftId}` : "for every gift"},{" "}
              {timeLabel(window.startTime)}–{timeLabel(window.endTime)}
              {inForce ? " · in force now" : ""}
            </li>
          );
        })}
      </ul>
    </section>
  );
}

function sideNames(battle: Battle): [string, string] {
  const hostsOf = (side: string) =>
    (battle.participants ?? [])
      .filter((participant) => participant.side === side)
      .map((participant) => participant.hostId)
      .join(" + ") || "?";
  return [hostsOf("SIDE_A"), hostsOf("SIDE_B")];
}

const scoreLine = (sides: readonly SideScore[]) =>
  sides.map((side) => `${enumLabel(side.side, "SIDE")} ${side.points ?? "0"}`).join(" : ");

/** The time now, ticking: the countdown runs between score updates. */
function useClock(): number {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    const timer = setInterval(() => setNow(Date.now()), clockTickMs);
    return () => clearInterval(timer);
  }, []);
  return now;
}
