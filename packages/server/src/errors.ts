// The one place where the error model meets the wire. A domain error (@ovation/errors) or a
// database failure (@ovation/db, whichever path raised it) becomes a ConnectError whose code is
// its kind, whose message is its message, and which carries a google.rpc.ErrorInfo detail
// (reason: the code in upper case, domain: "ovation.<domain>", metadata: its details), so a
// client can tell `insufficient_funds` from `hold_expired` without parsing text. A Connect code
// maps to an HTTP status here too, for the gateway. Every server installs the interceptor
// (server.ts); services map nothing themselves.
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { databaseError } from "@ovation/db";
import { type DomainError, type ErrorKind, isDomainError } from "@ovation/errors";
import { ErrorInfoSchema } from "@ovation/proto/gen/google/rpc/error_details_pb.ts";
import { retryPushbackHeader } from "./transport-errors.ts";

const codeOfKind: Record<ErrorKind, Code> = {
  invalid_argument: Code.InvalidArgument,
  not_found: Code.NotFound,
  already_exists: Code.AlreadyExists,
  permission_denied: Code.PermissionDenied,
  unauthenticated: Code.Unauthenticated,
  failed_precondition: Code.FailedPrecondition,
  out_of_range: Code.OutOfRange,
  resource_exhausted: Code.ResourceExhausted,
  aborted: Code.Aborted,
  unavailable: Code.Unavailable,
  deadline_exceeded: Code.DeadlineExceeded,
};

/** HTTP status per Connect code, like grpc-gateway except FAILED_PRECONDITION (412, not 400). */
const httpStatusByCode: Record<Code, number> = {
  [Code.Canceled]: 499,
  [Code.Unknown]: 500,
  [Code.InvalidArgument]: 400,
  [Code.DeadlineExceeded]: 504,
  [Code.NotFound]: 404,
  [Code.AlreadyExists]: 409,
  [Code.PermissionDenied]: 403,
  [Code.ResourceExhausted]: 429,
  [Code.FailedPrecondition]: 412,
  [Code.Aborted]: 409,
  [Code.OutOfRange]: 400,
  [Code.Unimplemented]: 501,
  [Code.Internal]: 500,
  [Code.Unavailable]: 503,
  [Code.DataLoss]: 500,
  [Code.Unauthenticated]: 401,
};

export const httpStatusOf = (code: Code): number => httpStatusByCode[code] ?? 500;

/** The Connect code a domain error's kind stands for. */
export const connectCodeOf = (kind: ErrorKind): Code => codeOfKind[kind];

function fromDomainError(error: DomainError): ConnectError {
  const info = create(ErrorInfoSchema, {
    reason: error.code.toUpperCase(),
    domain: `ovation.${error.domain}`,
    metadata: { ...error.details },
  });
  const connectError = new ConnectError(error.message, codeOfKind[error.kind], undefined, [
    { desc: ErrorInfoSchema, value: info },
  ]);
  // A caller told to come back later hears when: gRPC retry pushback, Retry-After over REST.
  if (error.retryAfterMs !== undefined)
    connectError.metadata.set(retryPushbackHeader, String(Math.max(1, Math.ceil(error.retryAfterMs))));
  return connectError;
}

/**
 * The ConnectError an error stands for: itself, a domain error's, a database failure's; undefined
 * for anything else (a bug, which the server answers as INTERNAL and logs).
 */
export function connectErrorOf(error: unknown): ConnectError | undefined {
  if (error instanceof ConnectError) return error;
  if (isDomainError(error)) return fromDomainError(error);
  const database = databaseError(error);
  return database === undefined ? undefined : fromDomainError(database);
}

/**
 * Maps every error a handler throws to its ConnectError; installed by every server. A streaming
 * handler throws while its messages are read, after `next` returned, so its messages are
 * mapped as they pass (otherwise a domain error in a stream would reach the caller as INTERNAL).
 */
export const errorModelInterceptor: Interceptor = (next) => async (request) => {
  try {
    const response = await next(request);
    return response.stream ? { ...response, message: mappingErrors(response.message) } : response;
  } catch (error) {
    throw connectErrorOf(error) ?? error;
  }
};

async function* mappingErrors<Message>(messages: AsyncIterable<Message>): AsyncIterable<Message> {
  try {
    yield* messages;
  } catch (error) {
    throw connectErrorOf(error) ?? error;
  }
}

/** The reason (domain error code) a ConnectError carries in its ErrorInfo, if any. */
export function reasonOf(error: ConnectError): string | undefined {
  return error.findDetails(ErrorInfoSchema)[0]?.reason.toLowerCase();
}

/** The details (ErrorInfo metadata) a ConnectError carries; empty when it has none. */
export function detailsOf(error: ConnectError): Readonly<Record<string, string>> {
  return error.findDetails(ErrorInfoSchema)[0]?.metadata ?? {};
}
