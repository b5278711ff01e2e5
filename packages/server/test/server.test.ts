// Proves one port serves gRPC over HTTP/2, Connect over HTTP/1.1, reflection for buf curl,
// health, metrics, and that shutdown lets an in-flight call finish.
import { execFile } from "node:child_process";
import { resolve } from "node:path";
import { promisify } from "node:util";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { Health, HealthCheckResponse_ServingStatus } from "@ovation/proto/gen/grpc/health/v1/health_pb.ts";
import { DlqService } from "@ovation/proto/gen/ovation/dlq/v1/dlq_pb.ts";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLogger, type RunningServer, startServer } from "../src/index.ts";

let server: RunningServer;
let releaseSlowCall: () => void = () => {};
let slowCallStarted: () => void = () => {};

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
    routes: (router) =>
      router.service(DlqService, {
        async discardDlqEntry() {
          await new Promise<void>((done) => {
            releaseSlowCall = done;
            slowCallStarted();
          });
          return {};
        },
      }),
  });
});
afterAll(() => server.close(100));

describe("startServer", () => {
  it("answers gRPC over HTTP/2 and Connect over HTTP/1.1 on the same port", async () => {
    const grpc = createClient(Health, createGrpcTransport({ baseUrl: server.url }));
    const connect = createClient(Health, createConnectTransport({ baseUrl: server.url, httpVersion: "1.1" }));
    expect((await grpc.check({})).status).toBe(HealthCheckResponse_ServingStatus.SERVING);
    expect((await connect.check({ service: "ovation.dlq.v1.DlqService" })).status).toBe(
      HealthCheckResponse_ServingStatus.SERVING,
    );
    await expect(connect.check({ service: "nope" })).rejects.toThrow(/unknown service/);
    const { statuses } = await grpc.list({});
    expect(Object.fromEntries(Object.entries(statuses).map(([name, { status }]) => [name, status]))).toEqual({
      "": HealthCheckResponse_ServingStatus.SERVING,
      "ovation.dlq.v1.DlqService": HealthCheckResponse_ServingStatus.SERVING,
    });
  });

  it("serves metrics and readiness over plain HTTP/1.1", async () => {
    const metrics = await fetch(`${server.url}/metrics`);
    expect(metrics.status).toBe(200);
    expect(await metrics.text()).toContain("process_cpu_user_seconds_total");
    expect((await fetch(`${server.url}/readyz`)).status).toBe(200);
    expect((await fetch(`${server.url}/nope`)).status).toBe(404);
  });

  it("lists services and describes methods through reflection (buf curl without --schema)", async () => {
    // Async on purpose: the server runs in this process and must keep answering.
    const run = promisify(execFile);
    const buf = resolve(import.meta.dirname, "../../proto/node_modules/.bin/buf");
    const { stdout: list } = await run(buf, [
      "curl",
      "--protocol",
      "grpc",
      "--http2-prior-knowledge",
      server.url,
      "--list-methods",
    ]);
    expect(list).toContain("ovation.dlq.v1.DlqService/ListDlqEntries");
    expect(list).toContain("grpc.health.v1.Health/Check");
    const { stdout: check } = await run(buf, [
      "curl",
      "--protocol",
      "grpc",
      "--http2-prior-knowledge",
      `${server.url}/grpc.health.v1.Health/Check`,
    ]);
    expect(JSON.parse(check)).toEqual({ status: "SERVING" });
  });

  it("drains: an in-flight call finishes during close, new calls are refused after", async () => {
    const client = createClient(DlqService, createGrpcTransport({ baseUrl: server.url }));
    const started = new Promise<void>((resolve) => {
      slowCallStarted = resolve;
    });
    const call = client.discardDlqEntry({ id: 1n });
    await started;
    const closing = server.close(5_000);
    releaseSlowCall();
    await expect(call).resolves.toBeDefined();
    await closing;
    await expect(
      createClient(Health, createGrpcTransport({ baseUrl: server.url })).check({}),
    ).rejects.toThrow();
  });
});
