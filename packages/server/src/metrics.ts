// Prometheus metrics. One registry per process, served at GET /metrics on the service port.
import { databaseStatements } from "@ovation/db";
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";

export const metricsRegistry = new Registry();
collectDefaultMetrics({ register: metricsRegistry });
metricsRegistry.registerMetric(databaseStatements);

export const rpcDuration = new Histogram({
  name: "ovation_rpc_duration_seconds",
  help: "RPC handling time by procedure and result code.",
  labelNames: ["procedure", "code"] as const,
  buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
  registers: [metricsRegistry],
});

export const eventsProcessed = new Counter({
  name: "ovation_events_processed_total",
  help: "Events handled by durable consumers, by consumer and outcome (processed, retried, dead_lettered, undecodable).",
  labelNames: ["consumer", "outcome"] as const,
  registers: [metricsRegistry],
});

export const outboxPublished = new Counter({
  name: "ovation_outbox_published_total",
  help: "Outbox events published to JetStream, by service (its schema).",
  labelNames: ["service"] as const,
  registers: [metricsRegistry],
});

export const outboxFailures = new Counter({
  name: "ovation_outbox_publish_failures_total",
  help: "Outbox rows JetStream refused (each is retried with a growing delay), by service.",
  labelNames: ["service"] as const,
  registers: [metricsRegistry],
});

export const outboxStuckRows = new Gauge({
  name: "ovation_outbox_stuck_rows",
  help: "Outbox rows that failed to publish 3 times or more and are still being retried, by service.",
  labelNames: ["service"] as const,
  registers: [metricsRegistry],
});

export const consumerPaused = new Gauge({
  name: "ovation_consumer_paused",
  help: "1 while a durable consumer waits out a database or NATS outage (its messages keep their delivery budget).",
  labelNames: ["consumer"] as const,
  registers: [metricsRegistry],
});

export const consumerOutageRetries = new Counter({
  name: "ovation_consumer_outage_retries_total",
  help: "Batches a durable consumer tried again because the database or NATS was unavailable.",
  labelNames: ["consumer"] as const,
  registers: [metricsRegistry],
});

export const deadLettersMoved = new Counter({
  name: "ovation_dead_letters_total",
  help: "Dead-letter entries written, by consumer and by who wrote them (runner: a handler kept failing; mover: a server advisory).",
  labelNames: ["consumer", "by"] as const,
  registers: [metricsRegistry],
});
