// Who is signed in, and the one client the pages share. The console holds a bearer token and
// nothing else: it never sees a signing key. On local infrastructure the gateway mints dev
// tokens (POST /api/auth/token, only with OVATION_DEV_TOKENS); anywhere else a person pastes a
// token from their identity provider. The token lives in sessionStorage, so it leaves with the tab.
import { createOvationClient, type OvationClient, ok } from "@ovation/client";
import { useEffect, useState } from "preact/hooks";

export type Role = "user" | "host" | "admin";

export interface Session {
  token: string;
  userId: string;
  roles: readonly string[];
  /** Seconds since the epoch; the console signs out when it passes. */
  expiresAt: number;
}

const storageKey = "ovation.console.token";
/** The gateway serving this page: REST and the channel socket are same-origin. */
const gatewayUrl = "/";

let session: Session | undefined = restore();
let client = newClient();
const listeners = new Set<() => void>();

function newClient(): OvationClient {
  return createOvationClient({ baseUrl: gatewayUrl, token: () => session?.token });
}

/** The claims a person can read in their own token (the gateway verifies the signature). */
export function readToken(token: string): Session {
  const payload = token.split(".")[1];
  if (payload === undefined) throw new Error("not a JWT: it has no payload");
  const base64 = payload.replace(/-/g, "+").replace(/_/g, "/");
  const claims = JSON.parse(atob(base64.padEnd(base64.length + ((4 - (base64.length % 4)) % 4), "=")));
  if (typeof claims.sub !== "string") throw new Error("the token names no user (sub)");
  const roles = Array.isArray(claims.roles) ? claims.roles.map(String) : [];
  return { token, userId: claims.sub, roles, expiresAt: Number(claims.exp ?? 0) };
}

function restore(): Session | undefined {
  const token = sessionStorage.getItem(storageKey);
  if (token === null) return undefined;
  try {
    const restored = readToken(token);
    return restored.expiresAt * 1000 > Date.now() ? restored : undefined;
  } catch {
    return undefined;
  }
}

function changed(): void {
  // A new identity gets a new socket: subscriptions of the last one must not carry over.
  void client.close();
  client = newClient();
  for (const listener of listeners) listener();
}

export function signIn(token: string): Session {
  session = readToken(token.trim());
  sessionStorage.setItem(storageKey, session.token);
  changed();
  return session;
}

export function signOut(): void {
  session = undefined;
  sessionStorage.removeItem(storageKey);
  changed();
}

/** Asks the gateway for a dev token; fails with the gateway's message where it mints none. */
export async function signInWithDevToken(userId: string, roles: Role[]): Promise<Session> {
  const { token } = await ok(client.api.POST("/api/auth/token", { body: { userId, roles } }));
  if (token === undefined) throw new Error("the gateway answered without a token");
  return signIn(token);
}

/** True when this gateway mints dev tokens (its document lists the route). */
export async function devTokensOffered(): Promise<boolean> {
  const response = await fetch("/api/openapi.json");
  if (!response.ok) return false;
  const document = (await response.json()) as { paths?: Record<string, unknown> };
  return document.paths?.["/api/auth/token"] !== undefined;
}

export const currentClient = (): OvationClient => client;
export const currentSession = (): Session | undefined => session;
export const isAdmin = (who: Session | undefined) => who?.roles.includes("admin") ?? false;

/** The session and its client; a component re-renders when someone signs in or out. */
export function useSession(): { session: Session | undefined; client: OvationClient } {
  const [, setVersion] = useState(0);
  useEffect(() => {
    const listener = () => setVersion((version) => version + 1);
    listeners.add(listener);
    return () => {
      listeners.delete(listener);
    };
  }, []);
  return { session, client };
}
