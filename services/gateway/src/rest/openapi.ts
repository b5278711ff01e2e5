// OpenAPI 3.1 for the REST API, generated from the same route table the gateway serves, so the
// document can never list a route that does not exist or miss one that does. Schemas follow
// the proto3 JSON mapping: camelCase names, 64-bit integers as strings, enums by name,
// Timestamps as RFC 3339 strings. Proto comments become descriptions when the descriptors
// carry source info (protobuf-es embeds none by default, so the document must stand without).
import {
  type DescEnum,
  type DescField,
  type DescFile,
  type DescMessage,
  type DescMethod,
  type DescService,
  ScalarType,
} from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import type { WebSocketDocument } from "../ws/document.ts";
import { codeName, httpStatusOf } from "./errors.ts";
import { enumShortNames, type LeafPath } from "./fields.ts";
import { isReadMethod, type Route } from "./routes.ts";
import { formatTemplate } from "./template.ts";

type Schema = Record<string, unknown>;

export interface OpenApiOptions {
  title: string;
  version: string;
  description: string;
  /** Extra operations the gateway serves itself, keyed by path then lower-case method. */
  extraPaths?: Record<string, Record<string, unknown>>;
  /**
   * The WebSocket API (ws/document.ts), given the schema of a proto message's JSON form; its
   * schemas join the components and its section becomes `x-websocket`.
   */
  webSocket?: (protoSchema: (message: DescMessage) => Schema) => WebSocketDocument;
}

/** Query parameters are listed down to this nesting depth; deeper fields stay body-only. */
const queryDepthMax = 3;
const bearerScheme = "bearerAuth";
const errorSchemaName = "Error";

export function openApiDocument(routes: readonly Route<unknown>[], options: OpenApiOptions): Schema {
  const schemas = new SchemaRegistry();
  const paths: Record<string, Record<string, unknown>> = {};
  for (const route of routes) {
    const path = formatTemplate(route.template, (fieldPath) => jsonPath(route.pathFields.get(fieldPath)!));
    paths[path] ??= {};
    paths[path][route.httpMethod.toLowerCase()] = operationOf(route, schemas);
  }
  for (const [path, operations] of Object.entries(options.extraPaths ?? {})) {
    paths[path] = { ...paths[path], ...operations };
  }
  const webSocket = options.webSocket?.((message) => schemas.message(message));
  const services = [...new Map(routes.map((route) => [route.service.typeName, route.service])).values()];
  return {
    openapi: "3.1.0",
    info: { title: options.title, version: options.version, description: options.description },
    servers: [{ url: "/" }],
    tags: services.map((service) => ({
      name: service.name,
      description: commentOf(service) ?? `${service.typeName}`,
    })),
    security: [{ [bearerScheme]: [] }, {}],
    paths,
    ...(webSocket === undefined ? {} : { "x-websocket": webSocket.section }),
    components: {
      schemas: { ...schemas.all(), ...webSocket?.schemas, [errorSchemaName]: errorSchema() },
      securitySchemes: {
        [bearerScheme]: {
          type: "http",
          scheme: "bearer",
          bearerFormat: "JWT",
          description: "Optional on public routes; required wherever the service needs a caller.",
        },
      },
    },
  };
}

function operationOf(route: Route<unknown>, schemas: SchemaRegistry): Schema {
  const { method, service } = route;
  const parameters = [...pathParameters(route, schemas), ...queryParameters(route, schemas)];
  if (method.input.fields.some((field) => field.name === "idempotency_key")) {
    parameters.push({
      name: "Idempotency-Key",
      in: "header",
      required: false,
      description:
        "Fills idempotencyKey when the request leaves it empty; a retry with the same key acts once.",
      schema: { type: "string", maxLength: 128 },
    });
  }
  const operation: Schema = {
    operationId: `${service.name}_${method.name}`,
    tags: [service.name],
    summary: method.name.replace(/([a-z])([A-Z])/g, "$1 $2"),
    description: commentOf(method) ?? `Calls ${service.typeName}/${method.name}.`,
    parameters,
    responses: {
      "200": { description: "OK", content: jsonContent(responseSchema(route, schemas)) },
      ...errorResponses(),
    },
  };
  const body = requestBodySchema(route, schemas);
  if (body !== undefined) operation.requestBody = { required: false, content: jsonContent(body) };
  if (isReadMethod(route.httpMethod) === false) operation["x-rate-limited"] = true;
  return operation;
}

function pathParameters(route: Route<unknown>, schemas: SchemaRegistry): Schema[] {
  return [...route.pathFields.values()].map((leaf) => ({
    name: jsonPath(leaf),
    in: "path",
    required: true,
    description: commentOf(leaf.leaf) ?? `Fills ${leaf.fields.map((f) => f.name).join(".")}.`,
    schema: schemas.field(leaf.leaf),
  }));
}

function queryParameters(route: Route<unknown>, schemas: SchemaRegistry): Schema[] {
  if (route.body === "*") return [];
  const bound = new Set([...route.pathFields.values()].map((leaf) => leaf.leaf));
  const parameters: Schema[] = [];
  const visit = (message: DescMessage, prefix: string, depth: number) => {
    for (const field of message.fields) {
      if (bound.has(field) || field === route.bodyField) continue;
      const name = prefix + field.jsonName;
      if (field.fieldKind === "message" && !isStringJson(field.message) && depth < queryDepthMax) {
        visit(field.message, `${name}.`, depth + 1);
      } else if (isQueryLeaf(field)) {
        parameters.push({
          name,
          in: "query",
          required: false,
          description: queryDescription(field),
          schema: schemas.field(field),
          ...(field.fieldKind === "list" ? { style: "form", explode: true } : {}),
        });
      }
    }
  };
  visit(route.method.input, "", 1);
  return parameters;
}

const isQueryLeaf = (field: DescField) =>
  field.fieldKind === "scalar" ||
  field.fieldKind === "enum" ||
  (field.fieldKind === "list" && field.listKind !== "message") ||
  (field.fieldKind === "message" && isStringJson(field.message));

function queryDescription(field: DescField): string {
  const base = commentOf(field) ?? `Fills ${field.name}.`;
  const enumDesc =
    field.fieldKind === "enum" ? field.enum : field.fieldKind === "list" ? field.enum : undefined;
  if (enumDesc === undefined) return base;
  return `${base} Accepts the value name, its number, or the short form (${enumShortNames(enumDesc).join(", ")}).`;
}

function requestBodySchema(route: Route<unknown>, schemas: SchemaRegistry): Schema | undefined {
  if (route.body === "*") return schemas.message(route.method.input);
  if (route.bodyField !== undefined) return schemas.field(route.bodyField);
  return undefined;
}

function responseSchema(route: Route<unknown>, schemas: SchemaRegistry): Schema {
  if (route.responseBody === "") return schemas.message(route.method.output);
  return schemas.field(route.method.output.fields.find((f) => f.name === route.responseBody)!);
}

const jsonContent = (schema: Schema) => ({ "application/json": { schema } });
const jsonPath = (leaf: LeafPath) => leaf.fields.map((field) => field.jsonName).join(".");

/** The error statuses every route can answer, one entry per distinct status. */
function errorResponses(): Record<string, unknown> {
  const responses: Record<string, unknown> = {};
  const codes = [
    Code.InvalidArgument,
    Code.Unauthenticated,
    Code.PermissionDenied,
    Code.NotFound,
    Code.AlreadyExists,
    Code.FailedPrecondition,
    Code.ResourceExhausted,
    Code.Unavailable,
    Code.DeadlineExceeded,
  ];
  const retryAfter = {
    "Retry-After": {
      description: "Seconds to wait before retrying (with the same idempotency key).",
      schema: { type: "integer", minimum: 1 },
    },
  };
  for (const code of codes) {
    const status = String(httpStatusOf(code));
    const retryable = code === Code.ResourceExhausted || code === Code.Unavailable;
    responses[status] ??= {
      description: codeName(code),
      ...(retryable ? { headers: retryAfter } : {}),
      content: jsonContent({ $ref: `#/components/schemas/${errorSchemaName}` }),
    };
  }
  responses["413"] = { description: "request body over 64 KiB" };
  return responses;
}

function errorSchema(): Schema {
  const codes = Object.values(Code)
    .filter((value): value is Code => typeof value === "number")
    .map(codeName);
  return {
    type: "object",
    required: ["code", "message", "details"],
    properties: {
      code: { type: "string", enum: codes, description: "Connect error code." },
      message: { type: "string" },
      details: {
        type: "array",
        items: {
          type: "object",
          properties: {
            type: { type: "string", description: "Protobuf type name of the detail." },
            value: { type: "string", contentEncoding: "base64" },
            debug: {},
          },
        },
      },
    },
  };
}

/** Well-known types whose JSON form is a string or a plain value, not an object of fields. */
const wellKnownSchemas: Record<string, Schema> = {
  "google.protobuf.Timestamp": { type: "string", format: "date-time" },
  "google.protobuf.Duration": { type: "string", pattern: "^-?[0-9]+(\\.[0-9]{1,9})?s$" },
  "google.protobuf.FieldMask": { type: "string" },
  "google.protobuf.Empty": { type: "object", additionalProperties: false },
  "google.protobuf.Struct": { type: "object" },
  "google.protobuf.Value": {},
  "google.protobuf.ListValue": { type: "array" },
  "google.protobuf.Any": { type: "object", required: ["@type"], properties: { "@type": { type: "string" } } },
  "google.protobuf.StringValue": { type: ["string", "null"] },
  "google.protobuf.BytesValue": { type: ["string", "null"], contentEncoding: "base64" },
  "google.protobuf.BoolValue": { type: ["boolean", "null"] },
  "google.protobuf.DoubleValue": { type: ["number", "null"] },
  "google.protobuf.FloatValue": { type: ["number", "null"] },
  "google.protobuf.Int32Value": { type: ["integer", "null"], format: "int32" },
  "google.protobuf.UInt32Value": { type: ["integer", "null"], minimum: 0 },
  "google.protobuf.Int64Value": { type: ["string", "null"], format: "int64" },
  "google.protobuf.UInt64Value": { type: ["string", "null"], format: "uint64" },
};

const isStringJson = (message: DescMessage) =>
  message.typeName.startsWith("google.protobuf.") &&
  message.typeName in wellKnownSchemas &&
  !["google.protobuf.Empty", "google.protobuf.Struct", "google.protobuf.Any"].includes(message.typeName);

function scalarSchema(scalar: ScalarType): Schema {
  switch (scalar) {
    case ScalarType.STRING:
      return { type: "string" };
    case ScalarType.BOOL:
      return { type: "boolean" };
    case ScalarType.BYTES:
      return { type: "string", contentEncoding: "base64" };
    case ScalarType.DOUBLE:
      return { type: "number", format: "double" };
    case ScalarType.FLOAT:
      return { type: "number", format: "float" };
    case ScalarType.INT32:
    case ScalarType.SINT32:
    case ScalarType.SFIXED32:
      return { type: "integer", format: "int32" };
    case ScalarType.UINT32:
    case ScalarType.FIXED32:
      return { type: "integer", minimum: 0, maximum: 4_294_967_295 };
    case ScalarType.UINT64:
    case ScalarType.FIXED64:
      // proto3 JSON writes 64-bit integers as strings: a JavaScript number cannot hold them all.
      return { type: "string", format: "uint64", pattern: "^[0-9]+$" };
    default:
      return { type: "string", format: "int64", pattern: "^-?[0-9]+$" };
  }
}

/** Component schemas for every message and enum the document reaches, by full type name. */
class SchemaRegistry {
  readonly #schemas = new Map<string, Schema>();

  all(): Record<string, Schema> {
    return Object.fromEntries([...this.#schemas].sort(([a], [b]) => a.localeCompare(b)));
  }

  message(message: DescMessage): Schema {
    const known = wellKnownSchemas[message.typeName];
    if (known !== undefined) return known;
    if (!this.#schemas.has(message.typeName)) {
      // Registered before its fields, so recursive messages end in a $ref instead of looping.
      const schema: Schema = { type: "object", additionalProperties: false };
      this.#schemas.set(message.typeName, schema);
      schema.description = commentOf(message) ?? message.typeName;
      schema.properties = Object.fromEntries(
        message.fields.map((field) => [field.jsonName, this.field(field)]),
      );
    }
    return { $ref: `#/components/schemas/${message.typeName}` };
  }

  enumeration(descriptor: DescEnum): Schema {
    if (!this.#schemas.has(descriptor.typeName)) {
      this.#schemas.set(descriptor.typeName, {
        type: "string",
        enum: descriptor.values.map((value) => value.name),
        description: commentOf(descriptor) ?? descriptor.typeName,
      });
    }
    return { $ref: `#/components/schemas/${descriptor.typeName}` };
  }

  field(field: DescField): Schema {
    const schema = this.#fieldType(field);
    const comment = commentOf(field);
    return comment === undefined ? schema : { ...schema, description: comment };
  }

  #fieldType(field: DescField): Schema {
    switch (field.fieldKind) {
      case "scalar":
        return scalarSchema(field.scalar);
      case "enum":
        return this.enumeration(field.enum);
      case "message":
        return this.message(field.message);
      case "list":
        return { type: "array", items: this.#element(field.listKind, field) };
      case "map":
        return { type: "object", additionalProperties: this.#element(field.mapKind, field) };
    }
  }

  #element(kind: "scalar" | "enum" | "message", field: DescField): Schema {
    if (kind === "enum") return this.enumeration(field.enum!);
    if (kind === "message") return this.message(field.message!);
    return scalarSchema(field.scalar!);
  }
}

type Documented = DescService | DescMethod | DescMessage | DescEnum | DescField;

/**
 * The leading comment of a descriptor from the file's source code info, when the generated
 * code embedded it; undefined otherwise (the default for protobuf-es).
 */
function commentOf(descriptor: Documented): string | undefined {
  const locations = fileOf(descriptor).proto.sourceCodeInfo?.location ?? [];
  if (locations.length === 0) return undefined;
  const path = sourcePath(descriptor);
  const location = locations.find(
    (candidate) =>
      candidate.path.length === path.length && candidate.path.every((part, index) => part === path[index]),
  );
  const text = location?.leadingComments.trim();
  return text === undefined || text === "" ? undefined : text;
}

function fileOf(descriptor: Documented): DescFile {
  return descriptor.kind === "field" || descriptor.kind === "rpc" ? descriptor.parent.file : descriptor.file;
}

/** The descriptor's path in SourceCodeInfo (descriptor.proto field numbers and indexes). */
function sourcePath(descriptor: Documented): number[] {
  switch (descriptor.kind) {
    case "service":
      return [6, descriptor.file.proto.service.indexOf(descriptor.proto)];
    case "rpc":
      return [...sourcePath(descriptor.parent), 2, descriptor.parent.proto.method.indexOf(descriptor.proto)];
    case "field":
      return [...sourcePath(descriptor.parent), 2, descriptor.parent.proto.field.indexOf(descriptor.proto)];
    case "message":
      return descriptor.parent === undefined
        ? [4, descriptor.file.proto.messageType.indexOf(descriptor.proto)]
        : [...sourcePath(descriptor.parent), 3, descriptor.parent.proto.nestedType.indexOf(descriptor.proto)];
    case "enum":
      return descriptor.parent === undefined
        ? [5, descriptor.file.proto.enumType.indexOf(descriptor.proto)]
        : [...sourcePath(descriptor.parent), 4, descriptor.parent.proto.enumType.indexOf(descriptor.proto)];
  }
}
