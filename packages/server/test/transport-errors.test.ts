// Proves that service clients report a connection that breaks mid-call as UNAVAILABLE (retry
// with the same key), whether the peer's socket closes (connect-node says CANCELED) or resets
// (connect-node says ABORTED), while statuses a server really sent, the caller's own
// cancellation and deadlines keep their codes.
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { Code, ConnectError } from "@connectrpc/connect";
import { DlqService } from "@ovation/proto/gen/ovation/dlq/v1/dlq_pb.ts";
import { codeOf } from "@ovation/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLogger, createServiceClient, type RunningServer, startServer } from "../src/index.ts";

let server: RunningServer;
let dying: http2.Http2Server;
let dyingUrl: string;

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
        discardDlqEntry() {
          throw new ConnectError("concurrent update, retry", Code.Aborted);
        },
        async replayDlqEntry(_request, ctx) {
          await new Promise((resolve) => ctx.signal.addEventListener("abort", resolve));
          return {};
        },
      }),
  });
  // A peer that takes the call and then loses its connection, the way a crashed process does:
  // id 1 closes the socket (FIN), id 2 resets it (RST).
  dying = http2.createServer();
  dying.on("stream", (stream) => {
    stream.on("data", (chunk: Buffer) => {
      const socket = stream.session?.socket as unknown as { destroy(): void; resetAndDestroy(): void };
      if (chunk.at(-1) === 2) socket.resetAndDestroy();
      else socket.destroy();
    });
  });
  await new Promise<void>((resolve) => dying.listen(0, "127.0.0.1", resolve));
  dyingUrl = `http://127.0.0.1:${(dying.address() as AddressInfo).port}`;
});
afterAll(async () => {
  await server.close(100);
  await new Promise((resolve) => dying.close(resolve));
});

describe("transport errors", () => {
  it("reports a peer whose socket closes or resets mid-call as unavailable, never canceled or aborted", async () => {
    const client = createServiceClient(DlqService, { baseUrl: dyingUrl });
    // Each call uses a fresh connection: the previous one died with its peer's socket.
    expect(await codeOf(client.discardDlqEntry({ id: 1n }))).toBe("Unavailable");
    expect(await codeOf(client.discardDlqEntry({ id: 2n }))).toBe("Unavailable");
    const error = await client.discardDlqEntry({ id: 2n }).then(
      () => undefined,
      (e: unknown) => ConnectError.from(e),
    );
    expect(error?.cause, "the original error is kept for logs").toBeInstanceOf(Error);
  });

  it("reports a refused connection as unavailable", async () => {
    const closed = http2.createServer();
    await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((resolve) => closed.close(resolve));
    const client = createServiceClient(DlqService, { baseUrl: `http://127.0.0.1:${port}` });
    expect(await codeOf(client.discardDlqEntry({ id: 1n }))).toBe("Unavailable");
  });

  it("keeps the status a server sent, the caller's cancellation and the deadline", async () => {
    const client = createServiceClient(DlqService, { baseUrl: server.url });
    expect(await codeOf(client.discardDlqEntry({ id: 1n }))).toBe("Aborted");
    expect(await codeOf(client.replayDlqEntry({ id: 1n }, { timeoutMs: 50 }))).toBe("DeadlineExceeded");
    const controller = new AbortController();
    const canceled = client.replayDlqEntry({ id: 1n }, { signal: controller.signal });
    setTimeout(() => controller.abort(), 20);
    expect(await codeOf(canceled)).toBe("Canceled");
  });
});
