// The WebSocket API in the OpenAPI document. OpenAPI has no words for a socket, so the frames go
// into `components.schemas` (ws.ClientFrame, ws.Reply, ws.<Kind>Message, ws.RoomBatch and the
// data schemas of messages.ts) and an `x-websocket` section names the path, the subprotocol, the
// close codes and, per channel kind, its name pattern and message schema. Clients generate their
// socket types from these (packages/client), as they generate REST calls from the paths.
import type { DescMessage } from "@bufbuild/protobuf";
import { z } from "@ovation/config";
import { channelKinds } from "./channels.ts";
import { roomBatchType } from "./fan-out.ts";
import { apiSubprotocol } from "./hub.ts";
import { channelMessages, type DataSchema, namedDataSchemas } from "./messages.ts";
import { clientFrameSchema, closeCodes, serverReplySchema } from "./protocol.ts";

type Schema = Record<string, unknown>;

export const webSocketPath = "/ws";

type Ref = { $ref: string };

/** The `x-websocket` section of the document, which clients read to generate their socket types. */
export interface WebSocketSection {
  path: string;
  /** The subprotocol to offer (with `bearer.<jwt>`, or authenticate with the first frame). */
  subprotocol: string;
  description: string;
  clientFrame: Ref;
  reply: Ref;
  /** Close codes the server uses, by name. */
  closeCodes: Record<string, number>;
  channels: Record<
    string,
    {
      /** The channel name: `<kind>:{id}` for public kinds, the kind alone for the caller's own. */
      name: string;
      scope: "public" | "own";
      description: string;
      /** One message, whose `type` tells what its `data` holds. */
      message: Ref;
      /** The frame that carries several messages, for kinds that coalesce them (room). */
      frame?: Ref;
    }
  >;
}

export interface WebSocketDocument {
  /** Component schemas by name. */
  schemas: Record<string, Schema>;
  section: WebSocketSection;
}

const ref = (name: string): Ref => ({ $ref: `#/components/schemas/${name}` });

/** The JSON Schema of a zod schema, without the `$schema` header a component must not carry. */
function jsonSchema(schema: z.ZodType, io: "input" | "output"): Schema {
  const { $schema: _, ...rest } = z.toJSONSchema(schema, { target: "draft-2020-12", io });
  return rest;
}

/** `protoSchema` turns a proto message into the document's schema of its JSON form (a $ref). */
export function webSocketDocument(protoSchema: (message: DescMessage) => Schema): WebSocketDocument {
  const dataNames = new Map<z.ZodType, string>(
    Object.entries(namedDataSchemas).map(([name, schema]) => [schema as z.ZodType, name]),
  );
  const dataSchema = (data: DataSchema): Schema => {
    if ("proto" in data) return protoSchema(data.proto);
    const name = dataNames.get(data);
    if (name === undefined)
      throw new Error("a channel message's data schema needs a name in namedDataSchemas");
    return ref(name);
  };
  const schemas: Record<string, Schema> = {
    "ws.ClientFrame": { ...jsonSchema(clientFrameSchema, "input"), description: "A frame the client sends." },
    "ws.Reply": {
      ...jsonSchema(serverReplySchema, "output"),
      description: "The server's answer to a frame.",
    },
  };
  for (const [name, schema] of Object.entries(namedDataSchemas)) schemas[name] = jsonSchema(schema, "output");
  const channels: WebSocketSection["channels"] = {};
  for (const [kind, spec] of Object.entries(channelKinds)) {
    const messageName = `ws.${kind[0]!.toUpperCase()}${kind.slice(1)}Message`;
    const messages = channelMessages[kind as keyof typeof channelMessages];
    schemas[messageName] = {
      description: `A message on a ${kind} channel; \`type\` says what \`data\` holds.`,
      oneOf: Object.entries(messages).map(([type, data]) => envelope(type, dataSchema(data))),
    };
    channels[kind] = {
      name: spec.scope === "own" ? kind : `${kind}:{id}`,
      scope: spec.scope,
      description: spec.description,
      message: ref(messageName),
    };
  }
  schemas["ws.RoomBatch"] = roomBatchSchema();
  channels.room = { ...channels.room!, frame: ref("ws.RoomBatch") };
  return {
    schemas,
    section: {
      path: webSocketPath,
      subprotocol: apiSubprotocol,
      description:
        "Authenticate with a first frame {op: auth, token} (or offer the subprotocols ovation.v1 and bearer.<jwt>), then subscribe to channels. Channel messages are {channel, type, data, ts, id}; a room's come in frames of type batch.",
      clientFrame: ref("ws.ClientFrame"),
      reply: ref("ws.Reply"),
      closeCodes,
      channels,
    },
  };
}

function envelope(type: string, data: Schema): Schema {
  return {
    type: "object",
    required: ["channel", "type", "data", "ts", "id"],
    additionalProperties: false,
    properties: {
      channel: { type: "string", description: "The channel subscribed to, for example room:42." },
      type: { type: "string", const: type },
      data,
      ts: { type: "string", format: "date-time", description: "When JetStream stored the event." },
      id: { type: "string", description: "The event id (the notification id for notifications)." },
    },
  };
}

function roomBatchSchema(): Schema {
  return {
    type: "object",
    description:
      "Every room message since the room's previous frame, each exactly the frame it would have been alone, at most WS_ROOM_BATCH_MAX of them.",
    required: ["channel", "type", "messages", "dropped", "ts"],
    additionalProperties: false,
    properties: {
      channel: { type: "string" },
      type: { type: "string", const: roomBatchType },
      messages: { type: "array", items: ref("ws.RoomMessage") },
      dropped: {
        type: "integer",
        minimum: 0,
        description:
          "Gifts left out since the previous frame (the smallest first); the gift log has them all.",
      },
      ts: { type: "string", format: "date-time" },
    },
  };
}
