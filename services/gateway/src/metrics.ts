// Gateway metrics, in the process-wide registry that GET /metrics serves.
import { metricsRegistry } from "@ovation/server";
import { Counter, Gauge, Histogram } from "prom-client";

export const httpDuration = new Histogram({
  name: "ovation_gateway_http_duration_seconds",
  help: "REST request handling time by route template, method and status.",
  labelNames: ["route", "method", "status"] as const,
  buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
  registers: [metricsRegistry],
});

export const wsConnections = new Gauge({
  name: "ovation_gateway_ws_connections",
  help: "Open WebSocket connections.",
  registers: [metricsRegistry],
});

export const wsMessagesSent = new Counter({
  name: "ovation_gateway_ws_messages_sent_total",
  help: "Channel messages written to WebSockets, by channel kind.",
  labelNames: ["kind"] as const,
  registers: [metricsRegistry],
});

export const wsFramesSent = new Counter({
  name: "ovation_gateway_ws_frames_sent_total",
  help: "WebSocket frames written with channel messages, by channel kind (a room frame carries several).",
  labelNames: ["kind"] as const,
  registers: [metricsRegistry],
});

export const wsMessagesDropped = new Counter({
  name: "ovation_gateway_ws_messages_dropped_total",
  help: "Channel messages not written: the socket was over its send buffer limit, or a room frame was full (0033).",
  labelNames: ["kind"] as const,
  registers: [metricsRegistry],
});

export const wsClosed = new Counter({
  name: "ovation_gateway_ws_closed_total",
  help: "WebSockets the gateway closed, by reason.",
  labelNames: ["reason"] as const,
  registers: [metricsRegistry],
});

export const eventsReceived = new Counter({
  name: "ovation_gateway_events_received_total",
  help: "JetStream events received by the WebSocket feeds, by subject and outcome.",
  labelNames: ["subject", "outcome"] as const,
  registers: [metricsRegistry],
});

export const upstreamShed = new Counter({
  name: "ovation_gateway_upstream_shed_total",
  help: "REST calls refused with 503 because an upstream was at its in-flight and queue bound, by upstream and why.",
  labelNames: ["upstream", "reason"] as const,
  registers: [metricsRegistry],
});

export const notificationsAnnounced = new Counter({
  name: "ovation_gateway_notifications_announced_total",
  help: "Notification NOTIFYs this replica heard, by outcome: pushed to a socket, no socket of the user here, malformed.",
  labelNames: ["outcome"] as const,
  registers: [metricsRegistry],
});
