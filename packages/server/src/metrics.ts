// Prometheus metrics. One registry per process, served at GET /metrics on the service port.
import { Counter, collectDefaultMetrics, Histogram, Registry } from "prom-client";

export const metricsRegistry = new Registry();
collectDefaultMetrics({ register: metricsRegistry });

export const rpcDuration = new Histogram({
  name: "ovation_rpc_duration_seconds",
  help: "RPC handling time by procedure and result code.",
  labelNames: ["procedure", "code"] as const,
  buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
  registers: [metricsRegistry],
});

export const eventsProcessed = new Counter({
  name: "ovation_events_processed_total",
  help: "Events handled by durable consumers, by consumer and outcome (processed, retried, exhausted, undecodable).",
  labelNames: ["consumer", "outcome"] as const,
  registers: [metricsRegistry],
});

export const outboxPublished = new Counter({
  name: "ovation_outbox_published_total",
  help: "Outbox events published to JetStream, by service (its schema).",
  labelNames: ["service"] as const,
  registers: [metricsRegistry],
});
