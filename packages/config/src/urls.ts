// Infrastructure URLs end up in tables, logs and error messages; a password in one must not.
// Database URLs may name several hosts, as libpq reads them (`postgres://u@h1:5441,h2:5442/db`):
// the WHATWG URL parser reads one, so the host list is set aside while it parses the rest.
import { z } from "zod";

const hostListPattern = /^([a-z][a-z0-9+.-]*:\/\/)(?:([^@/?#]*)@)?([^/?#]*)(.*)$/i;
const hostPattern = /^(\[[0-9a-f:.]+\]|[a-z0-9._~%-]+)(?::(\d{1,5}))?$/i;

/** The URL parsed with its host list replaced by one placeholder, and the hosts apart. */
function splitHosts(url: string): { parsed: URL; hosts: string[] } {
  const match = hostListPattern.exec(url);
  if (match === null) throw new TypeError("not a URL");
  const [, scheme, credentials, hostList = "", rest = ""] = match;
  const parsed = new URL(`${scheme}${credentials === undefined ? "" : `${credentials}@`}placeholder${rest}`);
  return { parsed, hosts: hostList.split(",") };
}

/** The URL with its password replaced by `***`; unparseable input is not echoed at all. */
export function redactUrl(url: string): string {
  try {
    const { parsed, hosts } = splitHosts(url);
    if (parsed.password !== "") parsed.password = "***";
    return parsed.toString().replace("placeholder", hosts.join(","));
  } catch {
    return "<unparseable URL>";
  }
}

/** True for `postgres://` URLs with one or more comma-separated `host[:port]` (libpq's form). */
export function isDatabaseUrl(url: string): boolean {
  try {
    const { parsed, hosts } = splitHosts(url);
    return (
      /^postgres(ql)?:$/.test(parsed.protocol) &&
      hosts.every((host) => {
        const port = hostPattern.exec(host)?.[2];
        return hostPattern.test(host) && (port === undefined || Number(port) <= 65_535);
      })
    );
  } catch {
    return false;
  }
}

/** A Postgres URL, with several hosts for a server that fails over. */
export const databaseUrl = () =>
  z.string().refine(isDatabaseUrl, "a postgres:// URL with one or more comma-separated host[:port]");
