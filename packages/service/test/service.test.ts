// Proves the service runner's order on a toy service against the real Postgres: the database
// is open before `build`, components start before the server, and on close the server stops
// first (its port refuses while components stop) and the database last; a part that fails to
// start stops whatever had started, in reverse, and the failure reaches the caller.

import { serviceConfigSchema, serviceSchema, z } from "@ovation/config";
import { Migration } from "@ovation/db";
import { CardService } from "@ovation/proto/gen/ovation/card/v1/card_pb.ts";
import { type TestEnvironment, testEnvironment } from "@ovation/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { defineService, runService } from "../src/index.ts";

class Toys extends Migration {
  override async up() {
    this.addSql("create table toys (id int primary key)");
  }
}

// A service that needs no bus: the card processor's identity, whose key the test kit makes.
const toyConfig = serviceSchema("card", serviceConfigSchema.extend({ PORT: z.coerce.number().default(0) }), {
  bus: false,
});

let env: TestEnvironment;
beforeAll(async () => {
  env = await testEnvironment();
});
afterAll(() => env?.[Symbol.asyncDispose]());

const answers = async (url: string) =>
  fetch(`${url}/healthz`).then(
    (response) => response.ok,
    () => false,
  );

function toyService(events: string[], failing?: string) {
  return defineService({
    name: "card",
    config: toyConfig,
    database: { schema: "toy", migrations: [{ name: "0001_toys", class: Toys }] },
    bus: false,
    async build({ orm }) {
      // The database is open and migrated before build runs.
      await orm.em.fork().execute("insert into toys values (1) on conflict do nothing");
      events.push("build");
      const component = (name: string) => ({
        name,
        async start() {
          if (name === failing) throw new Error(`${name} cannot start`);
          events.push(`start ${name}`);
        },
        async stop() {
          events.push(`stop ${name}`);
        },
      });
      return {
        rpc: { services: [CardService], routes: (router) => router.service(CardService, {}) },
        components: [component("cache"), component("announcer")],
      };
    },
  });
}

describe("a declared service", () => {
  it("starts its parts in order, serves, and stops the server first and the database last", async () => {
    const events: string[] = [];
    const service = await runService(toyService(events), { ...env.env, PORT: "0" });
    expect(events).toEqual(["build", "start cache", "start announcer"]);
    expect(await answers(service.url)).toBe(true);
    const orm = service.orm;
    await service.close();
    expect(events.slice(3)).toEqual(["stop announcer", "stop cache"]);
    expect(await answers(service.url)).toBe(false);
    expect(await orm.isConnected()).toBe(false);
    // Closing twice is closing once.
    await service.close();
    expect(events).toHaveLength(5);
  });

  it("stops what had started, in reverse, when a later part fails to start", async () => {
    const events: string[] = [];
    await expect(runService(toyService(events, "announcer"), { ...env.env, PORT: "0" })).rejects.toThrow(
      "announcer cannot start",
    );
    expect(events).toEqual(["build", "start cache", "stop cache"]);
  });

  it("refuses a configuration it cannot run with, naming every bad variable", async () => {
    await expect(runService(toyService([]), { ...env.env, PORT: "not a port" })).rejects.toThrow(/PORT/);
  });
});
