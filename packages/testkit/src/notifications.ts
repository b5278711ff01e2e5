// What a Postgres channel hears, for tests that must show that something sent no NOTIFY.
// Postgres delivers notifications in commit order, so a marker sent after the fact is heard
// after every notification committed before it: once the marker arrives, the absence of the
// others is proven, with no sleep.
import pg from "pg";
import { waitFor } from "./index.ts";

const marker = "ovation-testkit-marker";

export interface ChannelListener {
  /** Payloads heard so far, in commit order (markers left out). */
  readonly heard: string[];
  /** Sends a marker and waits for it: resolves with everything heard before it. */
  settle(): Promise<string[]>;
  stop(): Promise<void>;
}

/** LISTENs on `channel` through a connection of its own until `stop`. */
export async function listenToChannel(databaseUrl: string, channel: string): Promise<ChannelListener> {
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  const heard: string[] = [];
  let markers = 0;
  client.on("notification", (message) => {
    if (message.payload === marker) markers++;
    else heard.push(message.payload ?? "");
  });
  await client.query(`listen "${channel.replaceAll('"', '""')}"`);
  return {
    heard,
    async settle() {
      const expected = markers + 1;
      await client.query("select pg_notify($1, $2)", [channel, marker]);
      await waitFor(() => markers >= expected, { what: `the marker NOTIFY on ${channel}` });
      return [...heard];
    },
    stop: () => client.end(),
  };
}
