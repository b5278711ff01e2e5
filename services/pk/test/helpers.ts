// Starts PK replicas in-process against an isolated environment, and plays the gift service's
// part where a test needs exact control: GiftSent and room events published straight to the
// GIFT stream, with the commit time the test chooses.

import type { DescService } from "@bufbuild/protobuf";
import { create, type DescMessage, type MessageShape, toBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { type Client, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { headers as natsHeaders } from "@nats-io/nats-core";
import { bearerInterceptor } from "@ovation/auth";
import { EventBus, headerNames } from "@ovation/events";
import {
  GiftSentSchema,
  RoomEndedSchema,
  RoomStartedSchema,
} from "@ovation/proto/gen/ovation/gift/v1/events_pb.ts";
import { type TestEnvironment, testEnvironment, testStreamMaxBytes, waitFor } from "@ovation/testkit";
import { type PkApp, startPk } from "../src/main.ts";

export const fastPk = {
  EVENTS_RETRY_BACKOFF_MS: "50,100,200",
  EVENTS_ACK_WAIT_MS: "1500",
  PK_DURATION_MIN_SECONDS: "1",
  PK_BONUS_ROUND_MIN_SECONDS: "1",
  PK_SETTLE_DELAY_MS: "300",
  PK_SETTLE_GRACE_MS: "5000",
};

export interface PkHarness {
  env: TestEnvironment;
  replicas: PkApp[];
  bus: EventBus;
  startReplica(extra?: Record<string, string>): Promise<PkApp>;
  client<S extends DescService>(service: S, url: string, token?: string): Client<S>;
  /** Publishes an event on the GIFT stream as the gift service (or the wallet's relay) would. */
  publish<Desc extends DescMessage>(
    schema: Desc,
    subject: string,
    message: MessageShape<Desc>,
    eventId?: string,
  ): Promise<void>;
  /** A live room for `hostId`, known to PK once this returns. */
  goLive(hostId: string): Promise<string>;
  endLive(hostId: string, roomId: string, at?: Date): Promise<void>;
  gift(g: {
    hostId: string;
    senderId: string;
    points: bigint;
    at: Date;
    giftId?: string;
    sendId?: string;
  }): Promise<string>;
  close(): Promise<void>;
}

export async function startPkHarness(extra: Record<string, string> = {}): Promise<PkHarness> {
  const env = await testEnvironment();
  const replicas: PkApp[] = [];
  const bus = await EventBus.connect({
    url: env.natsUrl,
    prefix: env.prefix,
    name: "pk-test-publisher",
    streamMaxBytes: testStreamMaxBytes,
    ...env.natsOps,
  });
  await bus.ensureStreams();
  const harness: PkHarness = {
    env,
    replicas,
    bus,
    async startReplica(more = {}) {
      const app = await startPk({ ...env.env, PORT: "0", ...fastPk, ...extra, ...more });
      replicas.push(app);
      return app;
    },
    client: (service, url, token) =>
      createClient(
        service,
        createGrpcTransport({ baseUrl: url, interceptors: token ? [bearerInterceptor(() => token)] : [] }),
      ),
    async publish(schema, subject, message, eventId = crypto.randomUUID()) {
      const headers = natsHeaders();
      headers.set(headerNames.eventId, eventId);
      headers.set(headerNames.eventType, schema.typeName);
      await bus.js.publish(bus.names.subject(subject), toBinary(schema, message), {
        msgID: crypto.randomUUID(),
        headers,
      });
    },
    async goLive(hostId) {
      const roomId = crypto.randomUUID();
      await harness.publish(
        RoomStartedSchema,
        "gift.room.started",
        create(RoomStartedSchema, { roomId, hostId, startTime: timestampFromDate(new Date()) }),
      );
      const app = replicas[0]!;
      await waitFor(async () => (await app.store.liveRooms(app.store.fork(), [hostId])).has(hostId), {
        what: `${hostId} live in PK`,
      });
      return roomId;
    },
    async endLive(hostId, roomId, at = new Date()) {
      await harness.publish(
        RoomEndedSchema,
        "gift.room.ended",
        create(RoomEndedSchema, { roomId, hostId, endTime: timestampFromDate(at) }),
      );
    },
    async gift(g) {
      const sendId = g.sendId ?? crypto.randomUUID();
      await harness.publish(
        GiftSentSchema,
        "gift.gift.sent",
        create(GiftSentSchema, {
          sendId,
          senderId: g.senderId,
          hostId: g.hostId,
          roomId: crypto.randomUUID(),
          giftId: g.giftId ?? "rose",
          count: 1,
          total: g.points,
          pkPoints: g.points,
          sendTime: timestampFromDate(g.at),
        }),
        sendId,
      );
      return sendId;
    },
    async close() {
      for (const app of replicas.reverse()) await app.close();
      await bus.close();
      await env[Symbol.asyncDispose]();
    },
  };
  try {
    await harness.startReplica();
  } catch (error) {
    await harness.close();
    throw error;
  }
  return harness;
}

export { codeOf } from "@ovation/testkit";
