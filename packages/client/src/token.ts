// Where the client gets its bearer token: a fixed string, or a function asked again before
// every request and every socket (re)connect, so an app can refresh tokens without rebuilding
// the client. An empty or undefined token means "anonymous" (public routes only).

export type TokenSource = string | (() => string | undefined | Promise<string | undefined>) | undefined;

export async function resolveToken(source: TokenSource): Promise<string | undefined> {
  const token = typeof source === "function" ? await source() : source;
  return token === "" ? undefined : token;
}
