// Starts the wallet, the gift service and the gateway in-process against an isolated
// environment, and gives tests a small REST client and WebSocket client for the gateway.

import { startCard } from "@ovation/card";
import { type DiscountApp, startDiscount } from "@ovation/discount";
import { type GiftApp, startGift } from "@ovation/gift";
import { type OrderApp, startOrder } from "@ovation/order";
import { type PkApp, startPk } from "@ovation/pk";
import { type TestEnvironment, testEnvironment } from "@ovation/testkit";
import { startWallet, type Wallet } from "@ovation/wallet";
import WebSocket from "ws";
import { type Gateway, startGateway } from "../src/main.ts";

export interface GatewayHarness {
  env: TestEnvironment;
  wallet: Wallet;
  gift: GiftApp;
  /** Started only when asked for (`pk` settings given). */
  pk: PkApp | undefined;
  /** Started only when asked for (`discount` settings given). */
  discount: DiscountApp | undefined;
  gateway: Gateway;
  /** Starts one more gateway on the same services (own settings, own port). */
  extraGateway(settings: Record<string, string>): Promise<Gateway>;
  close(): Promise<void>;
}

const fastRetries = { EVENTS_RETRY_BACKOFF_MS: "50,100,200", EVENTS_ACK_WAIT_MS: "1500" };

/**
 * `settings` go to the first gateway, `serviceSettings` to the wallet and the gift service
 * (for example a smaller DATABASE_POOL_MAX: Postgres connections are shared with other runs),
 * `more` starts the PK, discount and order services too, each with the settings given.
 */
export async function startGatewayHarness(
  settings: Record<string, string> = {},
  serviceSettings: Record<string, string> = {},
  more: {
    pk?: Record<string, string>;
    discount?: Record<string, string>;
    order?: Record<string, string>;
    card?: Record<string, string>;
  } = {},
): Promise<GatewayHarness> {
  const env = await testEnvironment();
  const opened: { close(): Promise<void> }[] = [];
  const closeAll = async () => {
    for (const app of opened.reverse()) await app.close();
    await env[Symbol.asyncDispose]();
  };
  try {
    const wallet = await startWallet({ ...env.env, PORT: "0", ...fastRetries, ...serviceSettings });
    opened.push(wallet);
    const gift = await startGift({
      ...env.env,
      PORT: "0",
      WALLET_URL: wallet.server.url,
      ...fastRetries,
      ...serviceSettings,
    });
    opened.push(gift);
    let pk: PkApp | undefined;
    if (more.pk !== undefined) {
      pk = await startPk({ ...env.env, PORT: "0", ...fastRetries, ...more.pk });
      opened.push(pk);
    }
    let discount: DiscountApp | undefined;
    if (more.discount !== undefined) {
      discount = await startDiscount({
        ...env.env,
        PORT: "0",
        WALLET_URL: wallet.server.url,
        ...fastRetries,
        ...more.discount,
      });
      opened.push(discount);
    }
    let order: OrderApp | undefined;
    if (more.order !== undefined) {
      // The card processor answers at once and pays every charge, unless the test says otherwise.
      const card = await startCard({
        ...env.env,
        PORT: "0",
        CARD_LATENCY_MS: "0",
        CARD_FAILURE_RATE: "0",
        ...more.card,
      });
      opened.push(card);
      order = await startOrder({
        ...env.env,
        PORT: "0",
        WALLET_URL: wallet.server.url,
        CARD_URL: card.server.url,
        ...fastRetries,
        ...more.order,
      });
      opened.push(order);
    }
    const extraGateway = async (extra: Record<string, string>) => {
      const gateway = await startGateway({
        ...env.env,
        PORT: "0",
        WALLET_URL: wallet.server.url,
        GIFT_URL: gift.server.url,
        ...(pk === undefined ? {} : { PK_URL: pk.server.url }),
        ...(discount === undefined ? {} : { DISCOUNT_URL: discount.server.url }),
        ...(order === undefined ? {} : { ORDER_URL: order.server.url }),
        OVATION_DEV_TOKENS: "true",
        ...extra,
      });
      opened.push(gateway);
      return gateway;
    };
    const gateway = await extraGateway(settings);
    return { env, wallet, gift, pk, discount, gateway, extraGateway, close: closeAll };
  } catch (error) {
    await closeAll();
    throw error;
  }
}

/** A parsed JSON reply or frame; tests check its shape with assertions. */
// biome-ignore lint/suspicious/noExplicitAny: untyped JSON from the wire, checked by expect()
export type Json = any;

export interface Reply {
  status: number;
  body: Json;
  headers: Headers;
}

/** A fetch against the gateway that never throws on HTTP errors and parses JSON replies. */
export async function call(
  baseUrl: string,
  method: string,
  path: string,
  options: {
    token?: string;
    body?: unknown;
    raw?: string | Uint8Array;
    headers?: Record<string, string>;
  } = {},
): Promise<Reply> {
  const headers: Record<string, string> = { ...options.headers };
  if (options.token !== undefined) headers.authorization = `Bearer ${options.token}`;
  let body: string | Uint8Array | undefined = options.raw;
  if (options.body !== undefined) body = JSON.stringify(options.body);
  if (body !== undefined) headers["content-type"] ??= "application/json";
  const response = await fetch(`${baseUrl}${path}`, { method, headers, body });
  const text = await response.text();
  let parsed: unknown = text;
  try {
    parsed = text === "" ? undefined : JSON.parse(text);
  } catch {
    // not JSON: keep the text
  }
  return { status: response.status, body: parsed, headers: response.headers };
}

export interface SocketClient {
  socket: WebSocket;
  /**
   * Messages received so far, parsed; a room frame (`"type":"batch"`, 0033) is unpacked into the
   * messages it carries, as a client would, so tests read one room message at a time.
   */
  messages: Json[];
  /** Frames as they arrived, parsed and not unpacked. */
  frames: Json[];
  /** Resolves with the first message (already received or future) that matches. */
  next(predicate: (message: Json) => boolean, timeoutMs?: number): Promise<Json>;
  send(frame: unknown): void;
  closed: Promise<{ code: number; reason: string }>;
  close(): void;
}

export interface SocketOptions {
  /** Sent as the subprotocol `bearer.<token>` beside `ovation.v1`, the way browsers can. */
  token?: string;
  /** Appended to /ws, for example the legacy "?token=…". */
  query?: string;
  /** Subprotocols to offer instead of those `token` implies. */
  protocols?: string[];
  client?: WebSocket.ClientOptions;
}

export async function openSocket(baseUrl: string, options: SocketOptions = {}): Promise<SocketClient> {
  const protocols =
    options.protocols ?? (options.token === undefined ? [] : ["ovation.v1", `bearer.${options.token}`]);
  const socket = new WebSocket(
    `${baseUrl.replace(/^http/, "ws")}/ws${options.query ?? ""}`,
    protocols,
    options.client ?? {},
  );
  const messages: Json[] = [];
  const frames: Json[] = [];
  const waiters = new Set<() => void>();
  socket.on("message", (data) => {
    const frame = JSON.parse(data.toString());
    frames.push(frame);
    if (frame.type === "batch") messages.push(...frame.messages);
    else messages.push(frame);
    for (const wake of waiters) wake();
  });
  const closed = new Promise<{ code: number; reason: string }>((resolve) =>
    socket.once("close", (code, reason) => resolve({ code, reason: reason.toString() })),
  );
  await new Promise<void>((resolve, reject) => {
    socket.once("open", () => resolve());
    socket.once("error", reject);
  });
  return {
    socket,
    messages,
    frames,
    closed,
    send: (frame) => socket.send(JSON.stringify(frame)),
    close: () => socket.close(),
    next(predicate, timeoutMs = 5_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const found = messages.find(predicate);
          if (found === undefined) return false;
          cleanUp();
          resolve(found);
          return true;
        };
        const timer = setTimeout(() => {
          cleanUp();
          reject(new Error(`no matching message in ${timeoutMs} ms; got ${JSON.stringify(messages)}`));
        }, timeoutMs);
        const wake = () => void check();
        const cleanUp = () => {
          clearTimeout(timer);
          waiters.delete(wake);
        };
        waiters.add(wake);
        check();
      });
    },
  };
}
