// The REST route table, built at start-up from the google.api.http annotations in the
// generated descriptors: adding an annotated RPC to a proto adds its route with no gateway
// code. Every rule is checked here (path variables name scalar fields, GET has no body, no two
// rules claim the same method and path), so a bad annotation stops the gateway from starting.
import { type DescField, type DescMethod, type DescService, getOption } from "@bufbuild/protobuf";
import { http } from "@ovation/proto/gen/google/api/annotations_pb.ts";
import type { HttpRule } from "@ovation/proto/gen/google/api/http_pb.ts";
import { type LeafPath, resolveLeafPath } from "./fields.ts";
import {
  compareSpecificity,
  matchTemplate,
  type PathTemplate,
  parseTemplate,
  TemplateError,
} from "./template.ts";

export const httpMethods = ["GET", "POST", "PUT", "PATCH", "DELETE"] as const;
export type HttpMethod = (typeof httpMethods)[number];

/** Methods that only read: no body, query parameters fill the request, no write rate limit. */
export const isReadMethod = (method: string) => method === "GET" || method === "HEAD";

export type UnaryMethod = DescMethod & { methodKind: "unary" };

export interface Route<Target> {
  httpMethod: HttpMethod;
  template: PathTemplate;
  service: DescService;
  method: UnaryMethod;
  /** "" (no body), "*" (the whole request) or the name of the request field the body fills. */
  body: string;
  bodyField: DescField | undefined;
  /** Name of the response field returned as the body; "" for the whole response. */
  responseBody: string;
  /** Path variable (as written in the template) to the field it fills. */
  pathFields: ReadonlyMap<string, LeafPath>;
  /** Where calls go, for example the upstream that serves the service. */
  target: Target;
}

export interface ServiceBinding<Target> {
  services: readonly DescService[];
  target: Target;
}

export type RouteMatch<Target> =
  | { kind: "found"; route: Route<Target>; params: Map<string, string> }
  | { kind: "wrong-method"; allowed: HttpMethod[] }
  | { kind: "not-found" };

export class RouteTable<Target> {
  readonly routes: readonly Route<Target>[];
  /** Annotated methods the gateway does not serve, with the reason (streaming RPCs). */
  readonly skipped: readonly string[];

  constructor(bindings: readonly ServiceBinding<Target>[]) {
    const routes: Route<Target>[] = [];
    const skipped: string[] = [];
    for (const { services, target } of bindings) {
      for (const service of services) {
        for (const method of service.methods) collectRoutes(method, target, routes, skipped);
      }
    }
    assertUnique(routes);
    this.routes = routes.sort((a, b) => compareSpecificity(a.template, b.template));
    this.skipped = skipped;
  }

  match(httpMethod: string, segments: readonly string[]): RouteMatch<Target> {
    const allowed = new Set<HttpMethod>();
    for (const route of this.routes) {
      const params = matchTemplate(route.template, segments);
      if (params === undefined) continue;
      if (route.httpMethod === httpMethod) return { kind: "found", route, params };
      allowed.add(route.httpMethod);
    }
    return allowed.size > 0 ? { kind: "wrong-method", allowed: [...allowed] } : { kind: "not-found" };
  }
}

function collectRoutes<Target>(
  method: DescMethod,
  target: Target,
  routes: Route<Target>[],
  skipped: string[],
) {
  const rule = getOption(method, http);
  if (rule.pattern.case === undefined) return;
  if (method.methodKind !== "unary") {
    skipped.push(
      `${method.parent.typeName}.${method.name}: ${method.methodKind} RPCs are not served over REST`,
    );
    return;
  }
  for (const binding of [rule, ...rule.additionalBindings]) {
    routes.push(routeOf(method as UnaryMethod, binding, target));
  }
}

function routeOf<Target>(method: UnaryMethod, rule: HttpRule, target: Target): Route<Target> {
  const name = `${method.parent.typeName}.${method.name}`;
  const fail = (problem: string): never => {
    throw new TemplateError(`google.api.http of ${name}: ${problem}`);
  };
  const { httpMethod, path } = methodAndPath(rule) ?? fail("unsupported pattern");
  const template = parseTemplate(path);
  const pathFields = new Map<string, LeafPath>();
  for (const segment of template.segments) {
    if (segment.kind !== "variable") continue;
    const leaf = resolveLeafPath(method.input, segment.fieldPath);
    if (typeof leaf === "string") fail(leaf);
    else if (leaf.repeated) fail(`path variable ${segment.fieldPath} is repeated`);
    else pathFields.set(segment.fieldPath, leaf);
  }
  if (isReadMethod(httpMethod) && rule.body !== "") fail(`${httpMethod} cannot have a body`);
  const bodyField =
    rule.body === "" || rule.body === "*" ? undefined : method.input.fields.find((f) => f.name === rule.body);
  if (rule.body !== "" && rule.body !== "*" && bodyField === undefined) fail(`no body field ${rule.body}`);
  if (rule.responseBody !== "" && !method.output.fields.some((f) => f.name === rule.responseBody)) {
    fail(`no response field ${rule.responseBody}`);
  }
  return {
    httpMethod,
    template,
    service: method.parent,
    method,
    body: rule.body,
    bodyField,
    responseBody: rule.responseBody,
    pathFields,
    target,
  };
}

function methodAndPath(rule: HttpRule): { httpMethod: HttpMethod; path: string } | undefined {
  const pattern = rule.pattern;
  switch (pattern.case) {
    case "get":
    case "post":
    case "put":
    case "patch":
    case "delete":
      return { httpMethod: pattern.case.toUpperCase() as HttpMethod, path: pattern.value };
    case "custom": {
      const kind = pattern.value.kind.toUpperCase();
      const known = httpMethods.find((m) => m === kind);
      return known === undefined ? undefined : { httpMethod: known, path: pattern.value.path };
    }
    default:
      return undefined;
  }
}

function assertUnique<Target>(routes: readonly Route<Target>[]): void {
  const seen = new Map<string, string>();
  for (const route of routes) {
    // Variables are equivalent whatever their names: /a/{x} and /a/{y} collide.
    const shape = route.template.segments.map((s) => (s.kind === "literal" ? s.value : "{}")).join("/");
    const key = `${route.httpMethod} /${shape}`;
    const owner = `${route.service.typeName}.${route.method.name}`;
    const previous = seen.get(key);
    if (previous !== undefined) {
      throw new TemplateError(
        `${owner} and ${previous} both claim ${route.httpMethod} ${route.template.source}`,
      );
    }
    seen.set(key, owner);
  }
}
