// Serves one REST call: match the route, throttle reads and writes, verify the token, map the request,
// call the upstream with a deadline and the caller's token, answer with the response as proto3
// JSON. Defaults are always emitted (`alwaysEmitImplicit`), so a field is present even when it
// is zero or empty and clients never need to know proto3's "absent means default" rule.
import type { IncomingMessage, ServerResponse } from "node:http";
import { type DescMessage, type MessageShape, toJson } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { anonymous, type TokenVerifier } from "@ovation/auth";
import { identifyBearer } from "../auth-token.ts";
import { clientAddress, sendJson } from "../http.ts";
import { readJsonBody } from "./body.ts";
import { HttpError } from "./errors.ts";
import { type ExhaustedCodes, normalizeCode, redeemMethod } from "./exhausted-codes.ts";
import type { RateLimiter } from "./rate-limit.ts";
import { requestMessage } from "./request.ts";
import { isReadMethod, type Route, type RouteTable } from "./routes.ts";
import { splitPath } from "./template.ts";
import type { CallContext, Upstream } from "./upstream.ts";

export interface RestContext {
  routes: RouteTable<Upstream>;
  verify: TokenVerifier;
  limiter: RateLimiter;
  trustProxy: boolean;
  /** Discount redeems refused from memory once their campaign is exhausted (decision 0034). */
  exhausted?: ExhaustedCodes | undefined;
}

export interface RestExchange {
  request: IncomingMessage;
  response: ServerResponse;
  url: URL;
  requestId: string;
  /** Set as soon as a route matched, for logs and metrics. */
  route?: Route<Upstream>;
}

export async function serveRest(context: RestContext, exchange: RestExchange): Promise<void> {
  const { request, response, url } = exchange;
  const segments = splitPath(url.pathname);
  if (segments === undefined) throw new HttpError(400, Code.InvalidArgument, "malformed path");
  const match = context.routes.match(request.method ?? "", segments);
  if (match.kind === "not-found") throw new HttpError(404, Code.NotFound, `no route for ${url.pathname}`);
  if (match.kind === "wrong-method") {
    throw new HttpError(405, Code.Unimplemented, `${request.method} is not allowed here`, {
      allow: match.allowed.join(", "),
    });
  }
  const route = match.route;
  exchange.route = route;
  const exhausted = route.method === redeemMethod ? context.exhausted : undefined;
  // A call the upstream has no room for is refused before its token is verified or its body
  // read: under a burst most requests are these, and the signature check is the costliest part
  // of one (0055). A redeem is let through: memory may refuse it as exhausted, the final answer.
  if (exhausted === undefined) route.target.refuseWhenFull();
  const kind = isReadMethod(route.httpMethod) ? "read" : "write";
  const address = clientAddress(request, context.trustProxy);
  await context.limiter.checkAddress(kind, address);
  const authorization = request.headers.authorization ?? "";
  const identity = await identifyBearer(authorization, context.verify);
  if (identity !== anonymous) await context.limiter.checkUser(kind, identity.subject);
  const body = await readJsonBody(request);
  const input = requestMessage(route, {
    params: match.params,
    query: url.searchParams,
    body,
    idempotencyKey: singleHeader(request, "idempotency-key"),
  });
  const call = {
    authorization,
    clientAddress: address,
    requestId: exchange.requestId,
    signal: abortOnClientGone(request, response),
  };
  const output =
    exhausted === undefined
      ? await route.target.call(route.method, input, call)
      : await redeem(exhausted, route, input as MessageShape<typeof redeemMethod.input>, call);
  sendJson(response, 200, responseJson(route, output), { "x-request-id": exchange.requestId });
}

/**
 * A discount redeem: refused from memory when its code's campaign is known exhausted and it
 * has no idempotency key (a keyed retry may be a winner's, whose redemption comes back only from
 * the service); otherwise forwarded, and the answer teaches memory. A key-less redeem still
 * waiting for an upstream slot is refused as soon as another one's answer shows exhaustion.
 */
async function redeem(
  exhausted: ExhaustedCodes,
  route: Route<Upstream>,
  input: MessageShape<typeof redeemMethod.input>,
  call: CallContext,
): Promise<MessageShape<DescMessage>> {
  const code = normalizeCode(input.code);
  const keyless = input.idempotencyKey === "";
  if (keyless) {
    const refusal = exhausted.refusal(code);
    if (refusal !== undefined) throw refusal;
  }
  const waiting = keyless ? exhausted.waitFor(code) : undefined;
  try {
    const signal = waiting === undefined ? call.signal : AbortSignal.any([call.signal, waiting.signal]);
    const output = await route.target.call(route.method, input, { ...call, signal });
    // A keyed 200 may replay a redemption recorded before the campaign filled: only a
    // key-less one shows that the campaign had a slot.
    if (keyless) exhausted.answered(code, undefined);
    return output;
  } catch (error) {
    if (error !== waiting?.signal.reason) exhausted.answered(code, error);
    throw error;
  } finally {
    waiting?.release();
  }
}

function responseJson(route: Route<Upstream>, output: MessageShape<DescMessage>): unknown {
  const json = toJson(route.method.output, output, { alwaysEmitImplicit: true }) as Record<string, unknown>;
  if (route.responseBody === "") return json;
  const field = route.method.output.fields.find((f) => f.name === route.responseBody)!;
  return json[field.jsonName] ?? null;
}

function singleHeader(request: IncomingMessage, name: string): string | undefined {
  const value = request.headers[name];
  if (Array.isArray(value)) throw new HttpError(400, Code.InvalidArgument, `${name} may be sent once`);
  return value;
}

/** Cancels the upstream call when the client disconnects before the answer. */
function abortOnClientGone(request: IncomingMessage, response: ServerResponse): AbortSignal {
  const controller = new AbortController();
  const onClose = () => {
    if (!response.writableFinished) controller.abort(new ConnectError("client disconnected", Code.Canceled));
  };
  request.socket.once("close", onClose);
  response.once("finish", () => request.socket.off("close", onClose));
  return controller.signal;
}
