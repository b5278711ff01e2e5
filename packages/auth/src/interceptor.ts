// Verifies the bearer token of every request and puts the Identity in the handler context.
// No token means anonymous (public RPCs work; handlers that need a caller refuse); a bad
// token is refused here, before any handler runs.
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { anonymous, identityKey } from "./identity.ts";
import { KeySetUnavailableError, TokenError, type TokenVerifier } from "./tokens.ts";

const bearerPrefix = "bearer ";

export function authInterceptor(verify: TokenVerifier): Interceptor {
  return (next) => async (request) => {
    const header = request.header.get("authorization");
    if (header === null || header === "") {
      request.contextValues.set(identityKey, anonymous);
      return next(request);
    }
    if (!header.toLowerCase().startsWith(bearerPrefix)) {
      throw new ConnectError("authorization must be a Bearer token", Code.Unauthenticated);
    }
    try {
      request.contextValues.set(identityKey, await verify(header.slice(bearerPrefix.length).trim()));
    } catch (error) {
      if (error instanceof TokenError) throw new ConnectError(error.message, Code.Unauthenticated);
      if (error instanceof KeySetUnavailableError) throw new ConnectError(error.message, Code.Unavailable);
      throw error;
    }
    return next(request);
  };
}

/** Client interceptor that sends `token()` as the bearer token (service-to-service calls). */
export function bearerInterceptor(token: () => string | Promise<string>): Interceptor {
  return (next) => async (request) => {
    request.header.set("authorization", `Bearer ${await token()}`);
    return next(request);
  };
}
