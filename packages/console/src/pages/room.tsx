// One room: its gifts as they arrive on the `room:<id>` channel, its leaderboard (read again
// when gifts arrive, at most once a second), its active boosts, and a link to a PK battle that
// starts in it. The gift feed shows what arrived while the page was open: the gateway keeps no
// backlog (decision 0006), and the leaderboard holds the history.
import { type MessageOf, ok } from "@ovation/client";
import { useRef, useState } from "preact/hooks";
import { coins, enumLabel, timeLabel } from "../format.ts";
import { useChannel, usePoll } from "../live.ts";
import { href } from "../router.ts";
import { useSession } from "../session.ts";

type RoomMessage = MessageOf<`room:${string}`>;
type GiftSent = Extract<RoomMessage, { type: "gift.sent" }>["data"];
type Boost = Extract<RoomMessage, { type: "room.boosted" }>["data"];

const feedMax = 50;
const leaderboardSize = 10;
const leaderboardRefreshMs = 1_000;
const boostRefreshMs = 5_000;

export function RoomPage({ roomId }: { roomId: string }) {
  const { client, session } = useSession();
  const [gifts, setGifts] = useState<GiftSent[]>([]);
  const [boosts, setBoosts] = useState<Boost[]>([]);
  const [battleId, setBattleId] = useState<string | undefined>(undefined);
  const room = usePoll(() => ok(client.api.GET("/api/rooms/{roomId}", { params: { path: { roomId } } })), 0, [
    client,
    roomId,
  ]);
  const leaderboard = usePoll(
    () =>
      ok(
        client.api.GET("/api/rooms/{roomId}/leaderboard", {
          params: { path: { roomId }, query: { limit: leaderboardSize } },
        }),
      ),
    0,
    [client, roomId],
  );
  const discovered = usePoll(
    async () =>
      (await ok(client.api.GET("/api/discover", { params: { query: { pageSize: 100 } } }))).entries?.find(
        (entry) => entry.room?.id === roomId,
      ),
    boostRefreshMs,
    [client, roomId],
  );
  const lastRefresh = useRef(0);
  const refreshLeaderboard = () => {
    // Gifts can arrive by the hundred a second: the leaderboard is read at most once a second.
    const now = Date.now();
    if (now - lastRefresh.current < leaderboardRefreshMs) return;
    lastRefresh.current = now;
    setTimeout(leaderboard.reload, leaderboardRefreshMs);
  };
  const channel = useChannel(
    client,
    session === undefined ? undefined : `room:${roomId}`,
    (message) => {
      if (message.type === "gift.sent") {
        setGifts((shown) => [message.data, ...shown].slice(0, feedMax));
        refreshLeaderboard();
      } else if (message.type === "room.boosted") {
        setBoosts((shown) => [message.data, ...shown]);
        discovered.reload();
      } else if (message.type === "pk.started") {
        setBattleId(message.data.id as string | undefined);
      } else if (message.type === "pk.ended") {
        setBattleId(undefined);
      }
    },
    () => leaderboard.reload(),
  );

  const current = room.value?.room;
  return (
    <section>
      <h1>{current?.title || "Room"}</h1>
      <p class="hint">
        Room <code>{roomId}</code>, host {current?.hostId ?? "…"}, {enumLabel(current?.status, "ROOM_STATUS")}
        {" · "}
        {session === undefined ? (
          <a href={href("sign-in")}>sign in to see gifts arrive live</a>
        ) : (
          <span data-testid="channel-state">feed {channel}</span>
        )}
      </p>
      {room.error === undefined ? null : <p class="error">{room.error}</p>}
      {battleId === undefined ? null : (
        <p class="notice">
          A PK battle started here: <a href={href("pk", battleId)}>watch it</a>
        </p>
      )}
      <div class="columns">
        <div>
          <h2>Gifts</h2>
          <ol class="feed" data-testid="gift-feed">
            {gifts.length === 0 ? <li class="hint">Waiting for gifts…</li> : null}
            {gifts.map((gift) => (
              <li key={gift.sendId}>
                <strong>{gift.senderId}</strong> sent {gift.count} × {gift.giftName}
                {gift.combo > 1 ? <span class="combo"> combo ×{gift.combo}</span> : null} ({coins(gift.total)}
                ) <span class="hint">{timeLabel(gift.sendTime ?? undefined)}</span>
              </li>
            ))}
          </ol>
        </div>
        <div>
          <h2>Top gifters</h2>
          <table data-testid="leaderboard">
            <tbody>
              {(leaderboard.value?.entries ?? []).map((entry) => (
                <tr key={entry.userId}>
                  <td>{entry.rank}</td>
                  <td>{entry.userId}</td>
                  <td>{coins(entry.amount)}</td>
                </tr>
              ))}
            </tbody>
          </table>
          <h2>Active boosts</h2>
          <div data-testid="boosts">
            {discovered.value === undefined || discovered.value.boost === "0" ? (
              // Discovery counts a new boost a moment after its message: say nothing meanwhile.
              boosts.length === 0 ? (
                <p class="hint">No active boost.</p>
              ) : null
            ) : (
              <p>
                {coins(discovered.value.boost)} of boosts, until {timeLabel(discovered.value.boostExpireTime)}
              </p>
            )}
            <ul>
              {boosts.map((boost) => (
                <li key={boost.boostId}>
                  {boost.buyerId} boosted {coins(boost.amount)} for {boost.durationHours} h
                </li>
              ))}
            </ul>
          </div>
        </div>
      </div>
    </section>
  );
}
