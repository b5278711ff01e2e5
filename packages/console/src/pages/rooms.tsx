// Live rooms as discovery ranks them (GET /api/discover: COIN gifted in the last hour plus active
// boosts on the room and its host). Discovery has no channel, so the page asks every 2 s.
import { ok } from "@ovation/client";
import { coins, timeLabel } from "../format.ts";
import { usePoll } from "../live.ts";
import { href } from "../router.ts";
import { useSession } from "../session.ts";

const refreshMs = 2_000;
const pageSize = 50;

export function RoomsPage() {
  const { client } = useSession();
  const discover = usePoll(
    () => ok(client.api.GET("/api/discover", { params: { query: { pageSize } } })),
    refreshMs,
    [client],
  );
  const entries = discover.value?.entries ?? [];
  return (
    <section>
      <h1>Live rooms</h1>
      <p class="hint">Ranked as discovery ranks them: gifts of the last hour plus active boosts.</p>
      {discover.error === undefined ? null : <p class="error">{discover.error}</p>}
      {discover.value !== undefined && entries.length === 0 ? <p>No room is live.</p> : null}
      <table data-testid="rooms">
        <thead>
          <tr>
            <th>#</th>
            <th>Room</th>
            <th>Host</th>
            <th>Score</th>
            <th>Gifted (1 h)</th>
            <th>Boost</th>
            <th>Live since</th>
          </tr>
        </thead>
        <tbody>
          {entries.map((entry, index) => (
            <tr key={entry.room?.id}>
              <td>{index + 1}</td>
              <td>
                <a href={href("rooms", entry.room?.id)}>{entry.room?.title || entry.room?.id}</a>
              </td>
              <td>{entry.room?.hostId}</td>
              <td>{entry.score}</td>
              <td>{coins(entry.activity)}</td>
              <td>
                {entry.boost === "0"
                  ? "—"
                  : `${coins(entry.boost)} until ${timeLabel(entry.boostExpireTime)}`}
              </td>
              <td>{timeLabel(entry.room?.startTime)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}
