// Proves that REST clients who go away cannot get the gateway's connection to a service closed
// under the calls of everyone else. Every RST_STREAM a service receives spends a token of Node's
// rapid-reset protection (a burst of 1,000, then 33 a second, per connection); when they run
// out the service answers GOAWAY(INTERNAL_ERROR) and Node fails every call on the connection.
// The gateway used to cancel the upstream call of every client that disconnected: 1,350 such
// clients closed the gift service's connection and failed a call in flight on it.
//
// The gift service sits behind a fault proxy with a long latency, so each call is still in
// flight when its client leaves, and a call sent after the last client left is in flight when a
// GOAWAY provoked by the 1,000th reset would arrive (that reset reached the service no earlier
// than 1.5 s before the call did, its GOAWAY needs 1.5 s more to come back, and the call's own
// answer 3 s).
import http from "node:http";
import { FaultProxy, waitFor } from "@ovation/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Gateway } from "../src/main.ts";
import type { Upstream } from "../src/rest/upstream.ts";
import { call, type GatewayHarness, startGatewayHarness } from "./helpers.ts";

const latencyMs = 1_500;
/** Clients per wave: below the 512 streams a service lets one connection open at once. */
const waveSize = 450;
const waves = 3;

let h: GatewayHarness;
let proxy: FaultProxy;
let gateway: Gateway;
let gift: Upstream;
let token: string;

beforeAll(async () => {
  h = await startGatewayHarness();
  proxy = await FaultProxy.start(h.gift.server.url);
  gateway = await h.extraGateway({
    GIFT_URL: proxy.url(h.gift.server.url),
    UPSTREAM_CONNECTIONS: "1",
    UPSTREAM_INFLIGHT_MAX: "2000",
    UPSTREAM_TIMEOUT_MS: "30000",
    RATE_LIMIT_USER_READS: "1000000",
    RATE_LIMIT_IP_READS: "1000000",
  });
  gift = gateway.routes.routes.find((route) => route.target.name === "gift")!.target;
  token = await h.env.token("leaver", ["user"]);
});
afterAll(async () => {
  await h?.close();
  await proxy?.close();
});

/** Sends GET /api/gifts on a connection of its own; the returned function hangs up on it. */
function leavingClient(): () => void {
  const request = http.request(`${gateway.url}/api/gifts`, {
    agent: false,
    headers: { authorization: `Bearer ${token}` },
  });
  request.on("error", () => {});
  request.end();
  return () => request.destroy();
}

describe("clients that leave while their call is in flight", () => {
  it("leave the service's connection and the calls of everyone else alone", async () => {
    // One answered call first: the connection exists and knows the service's stream limit.
    expect((await call(gateway.url, "GET", "/api/gifts", { token })).status).toBe(200);
    proxy.latency(latencyMs);
    for (let wave = 0; wave < waves; wave++) {
      const leave = Array.from({ length: waveSize }, leavingClient);
      await waitFor(() => gift.inFlight === waveSize, {
        timeoutMs: 30_000,
        what: `wave ${wave}'s calls in flight upstream`,
      });
      for (const hangUp of leave) hangUp();
      await waitFor(() => gift.inFlight === 0, { timeoutMs: 30_000, what: `wave ${wave}'s calls to end` });
    }
    const other = await call(gateway.url, "GET", "/api/gifts", { token });
    expect(other.status, JSON.stringify(other.body)).toBe(200);
    // One connection all along: the service never closed it.
    expect(proxy.accepted).toBe(1);
  });
});
