// Who is calling, as the handlers see it. Tokens are verified once, by the interceptor; the
// handlers only ask questions of the Identity (is this the owner? does it have the role?).
import { Code, ConnectError, createContextKey, type HandlerContext } from "@connectrpc/connect";

export const roles = ["user", "host", "admin", "service"] as const;
export type Role = (typeof roles)[number];
export const isRole = (value: unknown): value is Role => roles.includes(value as Role);

export interface Identity {
  /**
   * User id for people ("alice"), service name for services ("gift"). For a service it is the
   * name its signing key is bound to (kid service:<name>:<version>), so callers cannot pose as
   * one another; per-caller rules may key on it.
   */
  readonly subject: string;
  readonly roles: ReadonlySet<Role>;
  /** VIP level from the `vip_level` claim, 0 when absent. */
  readonly vipLevel: number;
  /** The verified bearer token, forwarded on calls made on this caller's behalf. */
  readonly token: string;
}

export const anonymous: Identity = Object.freeze({
  subject: "",
  roles: new Set<Role>(),
  vipLevel: 0,
  token: "",
});

export const identityKey = createContextKey<Identity>(anonymous, { description: "verified caller identity" });

export const identityOf = (ctx: HandlerContext): Identity => ctx.values.get(identityKey);

export const isService = (identity: Identity) => identity.roles.has("service");
export const isAdmin = (identity: Identity) => identity.roles.has("admin");

/** The caller, who must be signed in. */
export function requireIdentity(ctx: HandlerContext): Identity {
  const identity = identityOf(ctx);
  if (identity === anonymous) throw new ConnectError("sign-in required", Code.Unauthenticated);
  return identity;
}

/** The caller, who must hold one of `allowed`. */
export function requireRole(ctx: HandlerContext, ...allowed: Role[]): Identity {
  const identity = requireIdentity(ctx);
  if (!allowed.some((role) => identity.roles.has(role))) {
    throw new ConnectError(`requires role ${allowed.join(" or ")}`, Code.PermissionDenied);
  }
  return identity;
}

/**
 * The user a request acts for: `requestedUserId` when given (only admins and services may act
 * for someone else), otherwise the caller.
 */
export function actingUser(ctx: HandlerContext, requestedUserId: string): string {
  const identity = requireIdentity(ctx);
  if (requestedUserId === "" || requestedUserId === identity.subject) {
    if (isService(identity)) throw new ConnectError("services must name the user", Code.InvalidArgument);
    return identity.subject;
  }
  if (isAdmin(identity) || isService(identity)) return requestedUserId;
  throw new ConnectError("users may act only on their own account", Code.PermissionDenied);
}
