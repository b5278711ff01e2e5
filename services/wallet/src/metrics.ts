// The wallet's own Prometheus metrics, on the shared registry (GET /metrics on its port).
import { metricsRegistry } from "@ovation/server";
import { Histogram } from "prom-client";

export const transferBatchSize = new Histogram({
  name: "ovation_wallet_transfer_batch_size",
  help: "Transfers per group-committed post_transfers call.",
  buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000],
  registers: [metricsRegistry],
});
