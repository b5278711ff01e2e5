// WebSocket channels. A channel kind is one line in `channelKinds`; a feed (feeds.ts) turns
// events into messages for a kind and an id. Public kinds are named "<kind>:<id>" and any
// signed-in user may watch them; own kinds are named just "<kind>" and always mean the caller
// ("user" is the caller's own notifications), so nobody can ask for someone else's.
import type { Identity } from "@ovation/auth";

export type ChannelScope = "public" | "own";

export interface ChannelKind {
  scope: ChannelScope;
  /** What the channel carries, for the OpenAPI document's x-websocket section. */
  description: string;
}

export const channelKinds = {
  room: {
    scope: "public",
    description:
      "A live room, room:<roomId>: its gifts (donation alerts), the start and result of battles its host joins, boosts of the room. Coalesced: at most one frame per tick carrying every message since the last (type batch).",
  },
  user: {
    scope: "own",
    description:
      "The caller's own notifications, always user (no id): wallet debits and credits, PK invitations, order status changes and stored notifications (boosts, coins landed).",
  },
  pk: {
    scope: "public",
    description:
      "A PK battle, pk:<battleId>: state changes with the countdown, live scores (at most 10 a second), boosts of a side, the result.",
  },
  campaign: {
    scope: "public",
    description: "A discount campaign, campaign:<campaignId>: its live counters, at most 10 a second.",
  },
} as const satisfies Record<string, ChannelKind>;

export type ChannelKindName = keyof typeof channelKinds;

/** Longest channel name a client may send; "room:" plus a 64-character id fits. */
export const channelNameMaxLength = 96;
const channelIdPattern = /^[A-Za-z0-9_.@-]{1,64}$/;

export interface ResolvedChannel {
  /** The name clients use ("room:42", "user"). */
  name: string;
  /** Where the hub files subscribers: "<kind>:<id>", the id being the caller for own kinds. */
  key: string;
}

const isKind = (kind: string): kind is ChannelKindName => Object.hasOwn(channelKinds, kind);

/** What `name` means for `identity`, or why it cannot be subscribed. */
export function resolveChannel(name: string, identity: Identity): ResolvedChannel | string {
  if (name.length > channelNameMaxLength)
    return `channel names are at most ${channelNameMaxLength} characters`;
  const separator = name.indexOf(":");
  const kind = separator === -1 ? name : name.slice(0, separator);
  const id = separator === -1 ? undefined : name.slice(separator + 1);
  if (!isKind(kind)) return `unknown channel ${name}; known kinds: ${Object.keys(channelKinds).join(", ")}`;
  if (channelKinds[kind].scope === "own") {
    if (id !== undefined) return `channel ${kind} takes no id: it is always your own`;
    return { name, key: deliveryKey(kind, identity.subject) };
  }
  if (id === undefined || !channelIdPattern.test(id)) return `channel ${kind} needs an id: ${kind}:<id>`;
  return { name, key: deliveryKey(kind, id) };
}

/** The hub key messages for `kind` and `id` go to (for own kinds, id is the user). */
export const deliveryKey = (kind: ChannelKindName, id: string) => `${kind}:${id}`;

/** The channel name subscribers see on messages for `kind` and `id`. */
export const channelName = (kind: ChannelKindName, id: string) =>
  (channelKinds[kind] as ChannelKind).scope === "own" ? kind : `${kind}:${id}`;
