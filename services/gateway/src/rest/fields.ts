// Field paths ("room_id", "money.asset") and the conversion of URL strings (path segments and
// query values) into proto3 JSON values, which protobuf-es `fromJson` then validates strictly.
import { type DescEnum, type DescField, type DescMessage, ScalarType } from "@bufbuild/protobuf";

/** A field that a URL string can fill: a scalar or enum, singular or repeated. */
export interface LeafPath {
  /** Fields from the request message down to the leaf. */
  fields: readonly DescField[];
  leaf: DescField;
  repeated: boolean;
}

/**
 * Well-known types whose proto3 JSON form is a string, so a query parameter can carry them
 * ("?since=2026-01-01T00:00:00Z").
 */
const stringJsonTypes = new Set([
  "google.protobuf.Timestamp",
  "google.protobuf.Duration",
  "google.protobuf.FieldMask",
  "google.protobuf.StringValue",
  "google.protobuf.BytesValue",
  "google.protobuf.Int64Value",
  "google.protobuf.UInt64Value",
  "google.protobuf.Int32Value",
  "google.protobuf.UInt32Value",
  "google.protobuf.DoubleValue",
  "google.protobuf.FloatValue",
]);

/** Nesting limit of field paths; request messages are shallow, this bounds the walk. */
const fieldPathDepthMax = 8;

const findField = (message: DescMessage, name: string): DescField | undefined =>
  message.fields.find((field) => field.name === name || field.jsonName === name);

/**
 * Resolves "money.asset" (proto or JSON names) to a leaf a string can fill, or explains why
 * it cannot: unknown names, maps and non-scalar messages are refused.
 */
export function resolveLeafPath(message: DescMessage, path: string): LeafPath | string {
  const names = path.split(".");
  if (names.length > fieldPathDepthMax) return `field path ${path} is too deep`;
  const fields: DescField[] = [];
  let current: DescMessage | undefined = message;
  for (const [index, name] of names.entries()) {
    const field: DescField | undefined = current === undefined ? undefined : findField(current, name);
    if (field === undefined) return `unknown field ${path}`;
    fields.push(field);
    const last = index === names.length - 1;
    if (last) return leafOf(fields, field, path);
    if (field.fieldKind !== "message" || stringJsonTypes.has(field.message.typeName)) {
      return `field ${names.slice(0, index + 1).join(".")} has no subfields`;
    }
    current = field.message;
  }
  return `unknown field ${path}`;
}

function leafOf(fields: DescField[], field: DescField, path: string): LeafPath | string {
  switch (field.fieldKind) {
    case "scalar":
    case "enum":
      return { fields, leaf: field, repeated: false };
    case "list":
      if (field.listKind === "message") return `field ${path} is a list of messages`;
      return { fields, leaf: field, repeated: true };
    case "message":
      if (stringJsonTypes.has(field.message.typeName)) return { fields, leaf: field, repeated: false };
      return `field ${path} is a message`;
    case "map":
      return `field ${path} is a map`;
  }
}

/**
 * The proto3 JSON value for one URL string. Numbers stay strings (proto3 JSON accepts both and
 * `fromJson` checks the range); booleans and enums get the forms `fromJson` expects.
 */
export function jsonValueOf(leaf: DescField, text: string): unknown {
  if (leaf.fieldKind === "enum" || (leaf.fieldKind === "list" && leaf.listKind === "enum")) {
    return enumValueOf(leaf.enum!, text);
  }
  const scalar = leaf.fieldKind === "scalar" || leaf.fieldKind === "list" ? leaf.scalar : undefined;
  if (scalar === ScalarType.BOOL || leaf.message?.typeName === "google.protobuf.BoolValue") {
    return booleanOf(text);
  }
  return text;
}

function booleanOf(text: string): boolean | string {
  if (text === "true" || text === "1") return true;
  if (text === "false" || text === "0") return false;
  // Left as a string: fromJson refuses it with a message that names the field.
  return text;
}

/**
 * Enum values by full name ("LEADERBOARD_PERIOD_DAY"), number ("1") or the name without the
 * enum's shared prefix in any case ("day").
 */
export function enumValueOf(descriptor: DescEnum, text: string): string | number {
  if (/^-?\d{1,10}$/.test(text)) return Number(text);
  const lower = text.toLowerCase();
  const value = descriptor.values.find(
    (candidate) => candidate.name === text || candidate.localName.toLowerCase() === lower,
  );
  return value?.name ?? text;
}

/** Short names of an enum's values, for documentation ("day", "week", "all"). */
export const enumShortNames = (descriptor: DescEnum): string[] =>
  descriptor.values.map((value) => value.localName.toLowerCase());
