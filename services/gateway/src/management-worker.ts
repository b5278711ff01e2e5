// The management port's server, on a thread of its own (decision 0055): GET /healthz and
// GET /readyz. Each probe asks the main thread for its readiness and waits up to freshWaitMs for
// the answer; a main loop busy with a burst does not answer that soon, and the probe gets the
// last answer it gave instead. A question left unanswered for staleMs means the main loop is
// stuck: both probes answer 503 until it answers again.
import http from "node:http";
import { parentPort, workerData } from "node:worker_threads";

export interface ManagementWorkerData {
  port: number;
  host: string;
  freshWaitMs: number;
  staleMs: number;
}

/** The main thread's readiness: the status and body of its /readyz. */
export interface Readiness {
  status: number;
  body: Record<string, unknown>;
}

/** What the worker tells the main thread. */
export type ManagementWorkerMessage = { listening: number } | { failed: string } | { ask: true };

const { port, host, freshWaitMs, staleMs } = workerData as ManagementWorkerData;
let last: Readiness | undefined;
/** When the unanswered question was asked (undefined: none pending). */
let askedAt: number | undefined;
let waiting: (() => void)[] = [];

parentPort!.on("message", (readiness: Readiness) => {
  last = readiness;
  askedAt = undefined;
  for (const wake of waiting) wake();
  waiting = [];
});

/** Asks the main thread (once at a time) and waits up to freshWaitMs for its answer. */
function fresh(): Promise<void> {
  if (askedAt === undefined) {
    askedAt = performance.now();
    parentPort!.postMessage({ ask: true } satisfies ManagementWorkerMessage);
  }
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, freshWaitMs);
    waiting.push(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}

function answer(response: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  response.writeHead(status, {
    "content-type": "application/json; charset=utf-8",
    "content-length": Buffer.byteLength(text),
    "cache-control": "no-store",
  });
  response.end(text);
}

const server = http.createServer(async (request, response) => {
  const path = (request.url ?? "").split("?")[0];
  if (
    (request.method !== "GET" && request.method !== "HEAD") ||
    (path !== "/healthz" && path !== "/readyz")
  ) {
    answer(response, 404, {
      code: "not_found",
      message: "the management port serves GET /healthz and GET /readyz only",
      details: [],
    });
    return;
  }
  await fresh();
  const stalledMs = askedAt === undefined ? 0 : Math.round(performance.now() - askedAt);
  if (stalledMs > staleMs) {
    answer(response, 503, { status: "stalled", message: `the event loop has not run for ${stalledMs} ms` });
  } else if (path === "/healthz") {
    answer(response, 200, { status: "ok" });
  } else if (last === undefined) {
    answer(response, 503, { status: "not ready" });
  } else {
    answer(response, last.status, last.body);
  }
});
server.on("clientError", (_error, socket) => {
  if (socket.writable)
    socket.end("HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n");
  else socket.destroy();
});
server.once("error", (error) =>
  parentPort!.postMessage({ failed: String(error) } satisfies ManagementWorkerMessage),
);
server.listen({ port, host }, () => {
  const address = server.address();
  parentPort!.postMessage({
    listening: typeof address === "object" && address !== null ? address.port : port,
  } satisfies ManagementWorkerMessage);
});
