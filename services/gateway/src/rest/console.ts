// The live console at /console: the page and hashed assets packages/console builds into its
// dist/ (its `generate` task, which `./ov up`, `./ov test` and the Docker image run). Only
// /console, /console/ and files directly under /console/assets/ with plain names are served, so
// no request path reaches anything else on disk. The page is the same for everyone: what it
// shows depends on the token the person signs in with, which the REST routes check.
import { readFile } from "node:fs/promises";
import type { ServerResponse } from "node:http";
import { extname, join, resolve } from "node:path";
import { Code } from "@connectrpc/connect";
import { HttpError } from "./errors.ts";

export const consolePath = "/console";
/** Where packages/console builds to, from this file (the workspace layout the image keeps too). */
const bundleDirectory = resolve(import.meta.dirname, "../../../../packages/console/dist");
const assetNamePattern = /^[A-Za-z0-9_.-]{1,128}$/;

const contentTypes: Readonly<Record<string, string>> = {
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".woff2": "font/woff2",
};

const securityHeaders = {
  // Scripts, styles and sockets of this origin only; uPlot and Preact set inline styles.
  "content-security-policy":
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
};

/** Assets are named by their content hash: read once, cached by browsers for good. */
const assets = new Map<string, Buffer>();

/** True when `pathname` is the console's; serves it. */
export async function serveConsole(pathname: string, response: ServerResponse): Promise<boolean> {
  if (
    pathname === consolePath ||
    pathname === `${consolePath}/` ||
    pathname === `${consolePath}/index.html`
  ) {
    // Read every time (it is small): a rebuilt console is served without a restart.
    const page = await readFile(join(bundleDirectory, "index.html")).catch(() => undefined);
    if (page === undefined) {
      throw new HttpError(
        404,
        Code.NotFound,
        "the console is not built here: run ./ov pnpm turbo run generate (./ov up does)",
      );
    }
    send(response, "text/html; charset=utf-8", page, "no-cache");
    return true;
  }
  const prefix = `${consolePath}/assets/`;
  if (!pathname.startsWith(prefix)) return false;
  const name = pathname.slice(prefix.length);
  const type = contentTypes[extname(name)];
  if (!assetNamePattern.test(name) || type === undefined) return false;
  let content = assets.get(name);
  if (content === undefined) {
    content = await readFile(join(bundleDirectory, "assets", name)).catch(() => undefined);
    if (content === undefined) return false;
    assets.set(name, content);
  }
  send(response, type, content, "public, max-age=31536000, immutable");
  return true;
}

function send(response: ServerResponse, type: string, body: Buffer, cacheControl: string): void {
  response.writeHead(200, {
    "content-type": type,
    "content-length": body.byteLength,
    "cache-control": cacheControl,
    ...securityHeaders,
  });
  response.end(body);
}
