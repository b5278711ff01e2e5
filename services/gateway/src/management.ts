// The management port (MANAGEMENT_PORT, decision 0055): GET /healthz and GET /readyz served by a
// worker thread with an event loop of its own. Under a burst the main loop's turns take 100 ms
// to a second (each handles hundreds of ready sockets), so a probe on a port the main thread
// serves waits that long, and a balancer with a short probe timeout takes a busy gateway out.
// The worker asks the main thread for its readiness at each probe and answers with the last
// answer it got if a fresh one does not come at once; nothing runs while nobody probes.
import { Worker } from "node:worker_threads";
import type { Logger } from "@ovation/server";
import type { ManagementWorkerData, ManagementWorkerMessage, Readiness } from "./management-worker.ts";

/** How long a probe waits for the main thread's fresh answer before it takes the last one. */
const freshWaitMs = 5;

export interface ManagementOptions {
  port: number;
  host: string;
  /** An unanswered question this old means the main loop is stuck: both probes answer 503. */
  staleMs: number;
  /** The gateway's own /readyz answer: status and body. */
  readiness: () => Promise<[number, Record<string, unknown>]>;
  logger: Logger;
}

export interface Management {
  /** The management port's address. */
  readonly url: string;
  /** Tells the worker the main thread's readiness now (on draining, say), unasked. */
  refresh(): void;
  close(): Promise<void>;
}

export async function startManagement(options: ManagementOptions): Promise<Management> {
  const worker = new Worker(new URL("./management-worker.ts", import.meta.url), {
    workerData: {
      port: options.port,
      host: options.host,
      freshWaitMs,
      staleMs: options.staleMs,
    } satisfies ManagementWorkerData,
  });
  let answering = false;
  const tell = async () => {
    if (answering) return;
    answering = true;
    let readiness: Readiness;
    try {
      const [status, body] = await options.readiness();
      readiness = { status, body };
    } catch (error) {
      options.logger.warn({ err: error }, "readiness could not be evaluated");
      readiness = { status: 503, body: { status: "not ready" } };
    } finally {
      answering = false;
    }
    worker.postMessage(readiness);
  };
  const port = await new Promise<number>((resolve, reject) => {
    worker.once("error", reject);
    worker.on("message", (message: ManagementWorkerMessage) => {
      if ("listening" in message) resolve(message.listening);
      else if ("failed" in message) reject(new Error(message.failed));
      else void tell();
    });
  }).catch(async (error: unknown) => {
    await worker.terminate();
    throw error;
  });
  worker.on("error", (error) => options.logger.error({ err: error }, "management port failed"));
  // The first probe then has an answer even if the main thread is busy when it comes.
  await tell();
  return {
    url: `http://${options.host}:${port}`,
    refresh: () => void tell(),
    close: async () => {
      await worker.terminate();
    },
  };
}
