// Integers written as JSON strings must be plain decimal. proto3 JSON allows strings for every
// integer field (64-bit ones must be strings), and protobuf-es `fromJson` hands them to a
// lenient number parser that takes "0x10", "1e3", " 10" and "+5". A count or an amount that
// means something other than what the client's own code or logs show is refused: the request
// is walked along its message descriptor (nested messages, lists, maps and the integer
// wrappers) before `fromJson`, and every integer given as a string must match
// -?(0|[1-9][0-9]*), without the sign for unsigned types.
import { type DescField, type DescMessage, ScalarType } from "@bufbuild/protobuf";
import { badRequest } from "./errors.ts";

const signedDecimal = /^-?(0|[1-9][0-9]*)$/;
const unsignedDecimal = /^(0|[1-9][0-9]*)$/;

const decimalPatterns: ReadonlyMap<ScalarType, RegExp> = new Map([
  [ScalarType.INT32, signedDecimal],
  [ScalarType.SINT32, signedDecimal],
  [ScalarType.SFIXED32, signedDecimal],
  [ScalarType.INT64, signedDecimal],
  [ScalarType.SINT64, signedDecimal],
  [ScalarType.SFIXED64, signedDecimal],
  [ScalarType.UINT32, unsignedDecimal],
  [ScalarType.FIXED32, unsignedDecimal],
  [ScalarType.UINT64, unsignedDecimal],
  [ScalarType.FIXED64, unsignedDecimal],
]);

/** Wrapper types whose JSON form is the wrapped integer itself. */
const integerWrappers: Readonly<Record<string, ScalarType>> = {
  "google.protobuf.Int32Value": ScalarType.INT32,
  "google.protobuf.UInt32Value": ScalarType.UINT32,
  "google.protobuf.Int64Value": ScalarType.INT64,
  "google.protobuf.UInt64Value": ScalarType.UINT64,
};

/** Request messages nest a few levels; a deeper walk is a hostile body, not an API call. */
const messageDepthMax = 32;
/** How much of a refused value the error message repeats. */
const quotedValueMaxLength = 40;

type JsonObject = Record<string, unknown>;

const isObject = (value: unknown): value is JsonObject =>
  typeof value === "object" && value !== null && !Array.isArray(value);

/**
 * Throws 400 naming the field when an integer field of `schema` is given as a string that is
 * not a canonical decimal. Everything else (wrong types, unknown fields, ranges) is left to
 * `fromJson`, which reports it.
 */
export function assertDecimalIntegers(schema: DescMessage, json: unknown): void {
  checkMessage(schema, json, "", 0);
}

function checkMessage(message: DescMessage, json: unknown, path: string, depth: number): void {
  const wrapped = integerWrappers[message.typeName];
  if (wrapped !== undefined) {
    checkScalar(wrapped, json, path);
    return;
  }
  if (depth > messageDepthMax) throw badRequest(`invalid request: ${path} is nested too deeply`);
  if (!isObject(json)) return;
  for (const [key, value] of Object.entries(json)) {
    const field = message.fields.find((candidate) => candidate.jsonName === key || candidate.name === key);
    if (field === undefined || value === null) continue;
    checkField(field, value, path === "" ? key : `${path}.${key}`, depth);
  }
}

function checkField(field: DescField, value: unknown, path: string, depth: number): void {
  switch (field.fieldKind) {
    case "scalar":
      checkScalar(field.scalar, value, path);
      return;
    case "message":
      checkMessage(field.message, value, path, depth + 1);
      return;
    case "enum":
      return;
    case "list":
      if (!Array.isArray(value)) return;
      for (const [index, element] of value.entries()) {
        const elementPath = `${path}[${index}]`;
        if (field.listKind === "scalar") checkScalar(field.scalar, element, elementPath);
        else if (field.listKind === "message") checkMessage(field.message, element, elementPath, depth + 1);
      }
      return;
    case "map":
      if (!isObject(value)) return;
      for (const [key, element] of Object.entries(value)) {
        const entryPath = `${path}[${JSON.stringify(key)}]`;
        checkScalar(field.mapKey, key, `${path} key ${JSON.stringify(key)}`);
        if (field.mapKind === "scalar") checkScalar(field.scalar, element, entryPath);
        else if (field.mapKind === "message") checkMessage(field.message, element, entryPath, depth + 1);
      }
      return;
  }
}

function checkScalar(scalar: ScalarType, value: unknown, path: string): void {
  const pattern = decimalPatterns.get(scalar);
  if (pattern === undefined || typeof value !== "string" || pattern.test(value)) return;
  const shown = JSON.stringify(value.slice(0, quotedValueMaxLength));
  const kind = pattern === unsignedDecimal ? "an unsigned decimal integer" : "a decimal integer";
  throw badRequest(`invalid request: field ${path}: ${shown} is not ${kind}`);
}
