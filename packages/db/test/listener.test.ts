// The shared LISTEN connection: proves that a process holds one LISTEN connection to a database
// however many parts listen (seen in pg_stat_activity by its application_name), that each
// NOTIFY reaches the subscribers of its channel only, that a connection killed with
// pg_terminate_backend is opened again (subscribers told it was lost and is back) and NOTIFYs
// arrive again, and that the connection closes with its last subscriber.
import { testEnvironment, waitFor } from "@ovation/testkit";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  defaultListenerApplicationName,
  type ListenHandlers,
  SharedListener,
  sharedListener,
} from "../src/index.ts";

describe("shared LISTEN connection", () => {
  let env: Awaited<ReturnType<typeof testEnvironment>>;
  let admin: pg.Client;

  beforeAll(async () => {
    env = await testEnvironment();
    admin = new pg.Client({ connectionString: env.databaseUrl });
    await admin.connect();
  });
  afterAll(async () => {
    await admin?.end();
    await env?.[Symbol.asyncDispose]();
  });

  const listenerPids = async (applicationName = defaultListenerApplicationName) =>
    (
      await admin.query<{ pid: number }>(
        "select pid from pg_stat_activity where datname = current_database() and application_name = $1",
        [applicationName],
      )
    ).rows.map((row) => row.pid);

  /** A subscriber that records what it hears, and when it was told of a loss and a return. */
  const recorder = () => {
    const heard: string[] = [];
    const events: string[] = [];
    const handlers: ListenHandlers = {
      notification: (channel, payload) => heard.push(`${channel}:${payload}`),
      lost: () => events.push("lost"),
      restored: () => events.push("restored"),
    };
    return { heard, events, handlers };
  };

  it("holds one connection for every subscriber and channel of the process", async () => {
    const listener = sharedListener(env.databaseUrl);
    expect(sharedListener(env.databaseUrl)).toBe(listener);
    const outbox = recorder();
    const jobs = recorder();
    const feed = recorder();
    const subscriptions = [
      await listener.subscribe(["wallet_outbox"], outbox.handlers),
      await listener.subscribe(["jobs:insert", "worker:migrate"], jobs.handlers),
      await listener.subscribe(["gateway_notifications", "wallet_outbox"], feed.handlers),
    ];
    expect(subscriptions.every((subscription) => subscription.listening)).toBe(true);
    expect(await listenerPids()).toHaveLength(1);

    await admin.query("select pg_notify('wallet_outbox', 'a'), pg_notify('jobs:insert', 'b')");
    await admin.query("select pg_notify('gateway_notifications', 'c')");
    await waitFor(() => outbox.heard.length === 1 && jobs.heard.length === 1 && feed.heard.length === 2);
    expect(outbox.heard).toEqual(["wallet_outbox:a"]);
    expect(jobs.heard).toEqual(["jobs:insert:b"]);
    expect(feed.heard).toEqual(["wallet_outbox:a", "gateway_notifications:c"]);

    for (const subscription of subscriptions) await subscription.close();
    await waitFor(async () => (await listenerPids()).length === 0);
    expect(listener.connected).toBe(false);
  });

  it("listens again on every channel after its connection is killed, and tells the subscribers", async () => {
    const listener = new SharedListener(env.databaseUrl, { applicationName: "ovation-listen-kill" });
    const outbox = recorder();
    const jobs = recorder();
    const first = await listener.subscribe(["pay_outbox"], outbox.handlers);
    const second = await listener.subscribe(["jobs:insert"], jobs.handlers);
    const [before] = await listenerPids("ovation-listen-kill");
    expect(before).toBeDefined();

    await admin.query("select pg_terminate_backend($1)", [before]);
    await waitFor(() => outbox.events.includes("restored") && jobs.events.includes("restored"));
    expect(outbox.events).toEqual(["lost", "restored"]);
    expect(jobs.events).toEqual(["lost", "restored"]);
    const after = await listenerPids("ovation-listen-kill");
    expect(after).toHaveLength(1);
    expect(after[0]).not.toBe(before);
    expect(first.listening && second.listening).toBe(true);

    await admin.query("select pg_notify('pay_outbox', 'after'), pg_notify('jobs:insert', 'after')");
    await waitFor(() => outbox.heard.length === 1 && jobs.heard.length === 1);
    expect(outbox.heard).toEqual(["pay_outbox:after"]);
    expect(jobs.heard).toEqual(["jobs:insert:after"]);
    await first.close();
    await second.close();
  });

  it("keeps trying while the database refuses, and says so to the subscriber", async () => {
    const url = new URL(env.databaseUrl);
    url.pathname = "/ovation_no_such_database";
    url.searchParams.delete("host");
    const listener = new SharedListener(url.toString());
    const subscriber = recorder();
    const subscription = await listener.subscribe(["nothing"], subscriber.handlers);
    expect(subscriber.events).toEqual(["lost"]);
    expect(subscription.listening).toBe(false);
    await subscription.close();
  });
});
