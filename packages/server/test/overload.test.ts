// Proves a service process bounds the calls it works on: past concurrencyMax a call is refused
// at once with UNAVAILABLE and a retry pushback (not queued until its deadline), health checks
// still answer, each HTTP/2 connection is told how many streams it may open, and a call past its
// client's deadline is ended by the server, so the client never has to reset the stream.
import http2 from "node:http2";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { Health, HealthCheckResponse_ServingStatus } from "@ovation/proto/gen/grpc/health/v1/health_pb.ts";
import { DlqService } from "@ovation/proto/gen/ovation/dlq/v1/dlq_pb.ts";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createLogger,
  overloadRetryAfterMs,
  type RunningServer,
  retryPushbackHeader,
  rpcConcurrencyMax,
  startServer,
} from "../src/index.ts";

const concurrencyMax = 2;
let server: RunningServer;
const held: (() => void)[] = [];

beforeAll(async () => {
  server = await startServer({
    name: "test",
    host: "127.0.0.1",
    port: 0,
    logger: createLogger("test", "silent"),
    verifyToken: async () => {
      throw new Error("no tokens in this test");
    },
    services: [DlqService],
    concurrencyMax,
    routes: (router) =>
      router.service(DlqService, {
        async discardDlqEntry() {
          await new Promise<void>((release) => held.push(release));
          return {};
        },
      }),
  });
});
afterAll(() => server.close(100));

describe("overload", () => {
  it("refuses calls past its concurrency bound with unavailable and a retry pushback, and keeps answering health checks", async () => {
    const client = createClient(DlqService, createGrpcTransport({ baseUrl: server.url }));
    const inFlight = Array.from({ length: concurrencyMax }, () => client.discardDlqEntry({ id: 1n }));
    while (held.length < concurrencyMax) await new Promise((resolve) => setTimeout(resolve, 5));

    const started = performance.now();
    const refused = await client.discardDlqEntry({ id: 1n }).then(
      () => undefined,
      (error: unknown) => ConnectError.from(error),
    );
    expect(refused?.code).toBe(Code.Unavailable);
    expect(refused?.metadata.get(retryPushbackHeader)).toBe(String(overloadRetryAfterMs));
    expect(performance.now() - started, "refused at once, not after a deadline").toBeLessThan(1_000);
    const health = createClient(Health, createGrpcTransport({ baseUrl: server.url }));
    expect((await health.check({})).status).toBe(HealthCheckResponse_ServingStatus.SERVING);

    for (const release of held.splice(0)) release();
    await Promise.all(inFlight);
    const again = client.discardDlqEntry({ id: 1n });
    while (held.length < 1) await new Promise((resolve) => setTimeout(resolve, 5));
    held.splice(0)[0]!();
    await expect(again).resolves.toBeDefined();
  });

  it("tells each HTTP/2 connection how many streams it may open", async () => {
    const session = http2.connect(server.url);
    try {
      await new Promise<void>((resolve) => session.once("remoteSettings", () => resolve()));
      expect(session.remoteSettings.maxConcurrentStreams).toBe(rpcConcurrencyMax);
    } finally {
      session.close();
    }
  });
});

describe("deadlines", () => {
  it("end a call at the deadline its client sent, without the client resetting the stream", async () => {
    // The client sends a deadline but keeps no timer of its own, as the gateway does: only the
    // server can end this call. Before, it hung for as long as its handler did.
    const client = createClient(DlqService, createGrpcTransport({ baseUrl: server.url }));
    const started = performance.now();
    const call = client.discardDlqEntry({ id: 1n }, { headers: { "grpc-timeout": "300m" } });
    const outcome = await Promise.race([
      call.then(
        () => "answered",
        (error: unknown) => ConnectError.from(error),
      ),
      new Promise<string>((resolve) => setTimeout(resolve, 5_000, "still waiting after 5 s")),
    ]);
    for (const release of held.splice(0)) release();
    expect(outcome).toBeInstanceOf(ConnectError);
    expect((outcome as ConnectError).code).toBe(Code.DeadlineExceeded);
    expect(performance.now() - started).toBeGreaterThanOrEqual(290);
  });
});
