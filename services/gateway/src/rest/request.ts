// HTTP request → request message, the way grpc-gateway maps it: path variables fill their
// fields; a `body: "*"` rule takes the whole message from the JSON body; otherwise query
// parameters fill the fields the path and body left (repeated fields by repeated keys). All of
// it is assembled as proto3 JSON, integers given as strings are checked to be plain decimals
// (integers.ts), and it is decoded once by `fromJson` with unknown fields refused, so typos,
// wrong types and out-of-range numbers are a 400 that names the field.
import { type DescMessage, fromJson, type MessageShape } from "@bufbuild/protobuf";
import { badRequest } from "./errors.ts";
import { jsonValueOf, type LeafPath, resolveLeafPath } from "./fields.ts";
import { assertDecimalIntegers } from "./integers.ts";
import type { Route } from "./routes.ts";

export interface HttpInput {
  /** Decoded path variables, by field path as written in the template. */
  params: ReadonlyMap<string, string>;
  query: URLSearchParams;
  /** The parsed JSON body; undefined when the request had none. */
  body: unknown;
  /** Value of the Idempotency-Key header, if sent. */
  idempotencyKey: string | undefined;
}

type JsonObject = Record<string, unknown>;

/** Distinct query parameters one request may carry; more is abuse, not an API call. */
const queryKeysMax = 64;
const idempotencyKeyField = "idempotency_key";

export function requestMessage<Target>(route: Route<Target>, input: HttpInput): MessageShape<DescMessage> {
  const schema = route.method.input;
  const json = bodyJson(route, input.body);
  if (route.body !== "*") applyQuery(route, input.query, json);
  else if ([...input.query.keys()].length > 0) {
    throw badRequest("query parameters are not accepted here: send every field in the JSON body");
  }
  for (const [fieldPath, leaf] of route.pathFields) {
    setLeaf(json, leaf, [jsonValueOf(leaf.leaf, input.params.get(fieldPath) ?? "")]);
  }
  assertDecimalIntegers(schema, json);
  let message: MessageShape<DescMessage>;
  try {
    message = fromJson(schema, json as never, { ignoreUnknownFields: false });
  } catch (error) {
    throw badRequest(`invalid request: ${(error as Error).message}`);
  }
  applyIdempotencyKey(message, schema, input.idempotencyKey);
  return message;
}

function bodyJson<Target>(route: Route<Target>, body: unknown): JsonObject {
  if (route.body === "") {
    if (body !== undefined) throw badRequest("this route takes no request body");
    return {};
  }
  if (route.body === "*") {
    if (body === undefined) return {};
    if (!isObject(body)) throw badRequest("the request body must be a JSON object");
    return { ...body };
  }
  return body === undefined ? {} : { [route.bodyField!.jsonName]: body };
}

function applyQuery<Target>(route: Route<Target>, query: URLSearchParams, json: JsonObject): void {
  const keys = new Set(query.keys());
  if (keys.size > queryKeysMax) throw badRequest(`at most ${queryKeysMax} query parameters`);
  for (const key of keys) {
    const leaf = resolveLeafPath(route.method.input, key);
    if (typeof leaf === "string") throw badRequest(`query parameter ${key}: ${leaf}`);
    const top = leaf.fields[0]!;
    if (route.bodyField === top) throw badRequest(`query parameter ${key}: the body sets this field`);
    if ([...route.pathFields.values()].some((bound) => sameLeaf(bound, leaf))) {
      throw badRequest(`query parameter ${key}: the path sets this field`);
    }
    const values = query.getAll(key);
    if (!leaf.repeated && values.length > 1) throw badRequest(`query parameter ${key} may appear once`);
    setLeaf(
      json,
      leaf,
      values.map((value) => jsonValueOf(leaf.leaf, value)),
    );
  }
}

const sameLeaf = (a: LeafPath, b: LeafPath) =>
  a.fields.length === b.fields.length && a.fields.every((field, index) => field === b.fields[index]);

/** Sets a leaf in the JSON object, creating intermediate objects; replaces both spellings. */
function setLeaf(json: JsonObject, path: LeafPath, values: unknown[]): void {
  let target = json;
  for (const field of path.fields.slice(0, -1)) {
    const existing = target[field.jsonName] ?? target[field.name];
    if (existing !== undefined && existing !== null && !isObject(existing)) {
      throw badRequest(`field ${field.name} must be an object`);
    }
    const next: JsonObject = { ...(existing ?? {}) };
    delete target[field.name];
    target[field.jsonName] = next;
    target = next;
  }
  delete target[path.leaf.name];
  target[path.leaf.jsonName] = path.repeated ? values : values[0];
}

/**
 * The Idempotency-Key header fills the request's idempotency_key when the body left it
 * empty; a body and header that disagree are refused rather than silently picking one.
 */
function applyIdempotencyKey(message: MessageShape<DescMessage>, schema: DescMessage, header?: string) {
  if (header === undefined) return;
  const field = schema.fields.find((f) => f.name === idempotencyKeyField && f.fieldKind === "scalar");
  if (field === undefined) return;
  const record = message as unknown as Record<string, unknown>;
  const current = record[field.localName];
  if (current === "") record[field.localName] = header;
  else if (current !== header) {
    throw badRequest("the Idempotency-Key header and the idempotencyKey field differ");
  }
}

const isObject = (value: unknown): value is JsonObject =>
  typeof value === "object" && value !== null && !Array.isArray(value);
