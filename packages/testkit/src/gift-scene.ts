// The scene the gift and gateway benchmarks start from: a 1-coin gift "rose", one hot host
// live in a room, and funded senders s1..sN, each with a token and a gRPC client of its own.
// Set up through the gift service's own API and the wallet's tables (seed.ts), so neither
// benchmark imports another service.
import { type Client, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { bearerInterceptor } from "@ovation/auth";
import { GiftService } from "@ovation/proto/gen/ovation/gift/v1/gift_pb.ts";
import pg from "pg";
import type { TestEnvironment } from "./index.ts";
import { seedFundedUsers } from "./seed.ts";

export interface GiftScene {
  roomId: string;
  /** Bearer tokens of the senders, by worker index. */
  senderTokens: string[];
  /** One send of one rose by sender `worker`, with a fresh idempotency key. */
  send(worker: number): ReturnType<Client<typeof GiftService>["sendGift"]>;
}

export async function setUpGiftScene(
  env: TestEnvironment,
  giftUrl: string,
  senders: number,
): Promise<GiftScene> {
  const client = (token: string) =>
    createClient(
      GiftService,
      createGrpcTransport({ baseUrl: giftUrl, interceptors: [bearerInterceptor(() => token)] }),
    );
  const admin = client(await env.token("bench-admin", ["admin"]));
  await admin.createGift({
    gift: {
      id: "rose",
      name: "Rose",
      price: 1n,
      pkPoints: 1n,
      vipOnly: false,
      minVipLevel: 0,
      animationKey: "rose",
    },
  });
  const host = client(await env.token("hot-host", ["host"]));
  const roomId = (await host.startLive({ title: "bench" })).room!.id;
  // Funded senders, seeded as a consistent ledger (one mint transfer each).
  const db = new pg.Client({ connectionString: env.databaseUrl });
  await db.connect();
  try {
    await seedFundedUsers(db, "s", senders, 1_000_000_000n);
  } finally {
    await db.end();
  }
  const senderTokens = await Promise.all(
    Array.from({ length: senders }, (_, i) => env.token(`s${i + 1}`, ["user"])),
  );
  const clients = senderTokens.map(client);
  return {
    roomId,
    senderTokens,
    send: (worker) =>
      clients[worker]!.sendGift({ roomId, giftId: "rose", count: 1, idempotencyKey: crypto.randomUUID() }),
  };
}
