// The WebSocket protocol, client side to server side. Clients send JSON text frames:
//   {"op":"auth","token":"<jwt>"}                 first frame, unless the upgrade offered the
//                                                 subprotocol "bearer.<jwt>" (hub.ts)
//   {"op":"subscribe","channel":"room:42","id":1}  id (optional) is echoed in the answer
//   {"op":"unsubscribe","channel":"room:42"}
//   {"op":"ping"}                                  for clients that cannot see WebSocket pings
// The server answers {"type":"authenticated"|"subscribed"|"unsubscribed"|"pong"|"error", ...}
// and sends channel messages as {"channel","type","data","ts"} (plus "id", the event id). A room
// channel's messages come coalesced (0033): at most one frame per room per WS_ROOM_TICK_MS,
//   {"channel":"room:42","type":"batch","messages":[<message>, …],"dropped":N,"ts"}
// each <message> exactly the frame it would have been alone, at most WS_ROOM_BATCH_MAX of them;
// "dropped" counts the gifts left out since the previous frame of the room (the smallest first).
// "subscribed" comes only once the replica's live feeds are up; while they are not (NATS away),
// a subscribe waits up to WS_FEED_WAIT_MS and is then answered with an error "unavailable".
// Frames are strict JSON: a key twice in one object is refused (json.ts).
// Close codes: 4401 authentication failed or timed out (or a token on the URL without
// WS_QUERY_TOKEN), 4429 too many connections for the user, 1008 protocol abuse, 1009 frame
// over 4 KiB, 1013 too slow to keep up, 1001 shutdown.
import { z } from "@ovation/config";
import { DuplicateKeyError, parseStrictJson } from "../json.ts";
import { channelNameMaxLength } from "./channels.ts";

export const closeCodes = {
  goingAway: 1001,
  policyViolation: 1008,
  tryAgainLater: 1013,
  unauthenticated: 4401,
  tooManyConnections: 4429,
} as const;

/** Inbound frames are small JSON commands; the largest is an auth frame with a token. */
export const inboundFrameMaxBytes = 4 * 1024;

const requestId = z.union([z.string().max(64), z.number().int()]).optional();

export const clientFrameSchema = z.discriminatedUnion("op", [
  z.strictObject({ op: z.literal("auth"), token: z.string().min(1).max(4000), id: requestId }),
  z.strictObject({
    op: z.literal("subscribe"),
    channel: z.string().max(channelNameMaxLength),
    id: requestId,
  }),
  z.strictObject({
    op: z.literal("unsubscribe"),
    channel: z.string().max(channelNameMaxLength),
    id: requestId,
  }),
  z.strictObject({ op: z.literal("ping"), id: requestId }),
]);

export type ClientFrame = z.output<typeof clientFrameSchema>;

/** Parses one inbound text frame, or says what is wrong with it. */
export function parseClientFrame(text: string): ClientFrame | string {
  let json: unknown;
  try {
    json = parseStrictJson(text);
  } catch (error) {
    if (error instanceof DuplicateKeyError) return `invalid frame: ${error.message}`;
    return "frames must be JSON";
  }
  const parsed = clientFrameSchema.safeParse(json);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0]!;
  return `invalid frame: ${issue.path.join(".") || "frame"}: ${issue.message}`;
}

/** The codes an `error` reply carries; the connection stays open after each. */
export const replyErrorCodes = [
  "invalid_argument",
  "permission_denied",
  "resource_exhausted",
  "unavailable",
] as const;

/**
 * The server's answers to client frames (and `dropped`, its notice of skipped messages). The
 * OpenAPI document publishes this schema, so clients derive their types from it.
 */
export const serverReplySchema = z.discriminatedUnion("type", [
  z.strictObject({ type: z.literal("authenticated"), userId: z.string(), id: requestId }),
  z.strictObject({ type: z.literal("subscribed"), channel: z.string(), id: requestId }),
  z.strictObject({ type: z.literal("unsubscribed"), channel: z.string(), id: requestId }),
  z.strictObject({ type: z.literal("pong"), id: requestId }),
  z.strictObject({
    type: z.literal("error"),
    code: z.enum(replyErrorCodes),
    message: z.string(),
    /** The command refused, when the error answers a subscribe or an unsubscribe. */
    op: z.enum(["subscribe", "unsubscribe"]).optional(),
    id: requestId,
  }),
  z
    .strictObject({ type: z.literal("dropped"), count: z.number().int().min(1) })
    .describe("Messages skipped while the socket was over its send buffer limit."),
]);

export type ServerReply = z.output<typeof serverReplySchema>;
