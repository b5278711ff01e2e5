// The human-readable API page at /docs: Swagger UI from the swagger-ui-dist package, served
// from node_modules (no CDN), rendering /api/openapi.json. Only the files listed here are
// served, so no request path ever reaches the file system.
import { readFile } from "node:fs/promises";
import type { ServerResponse } from "node:http";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";

export const docsPath = "/docs";
const openApiUrl = "/api/openapi.json";

const assets: Readonly<Record<string, string>> = {
  "swagger-ui.css": "text/css; charset=utf-8",
  "index.css": "text/css; charset=utf-8",
  "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
  "swagger-ui-standalone-preset.js": "text/javascript; charset=utf-8",
  "favicon-32x32.png": "image/png",
  "favicon-16x16.png": "image/png",
};

const assetDirectory = dirname(createRequire(import.meta.url).resolve("swagger-ui-dist/package.json"));

// The initializer is a file rather than an inline script so the page can forbid inline scripts.
const initializer = `window.onload = () => {
  window.ui = SwaggerUIBundle({
    url: ${JSON.stringify(openApiUrl)},
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    layout: "StandaloneLayout",
  });
};
`;

const page = `<!doctype html>
<html lang="en">
  <head>
    <meta charset="utf-8">
    <title>Ovation API</title>
    <link rel="stylesheet" href="${docsPath}/swagger-ui.css">
    <link rel="stylesheet" href="${docsPath}/index.css">
    <link rel="icon" type="image/png" href="${docsPath}/favicon-32x32.png" sizes="32x32">
  </head>
  <body>
    <div id="swagger-ui"></div>
    <script src="${docsPath}/swagger-ui-bundle.js"></script>
    <script src="${docsPath}/swagger-ui-standalone-preset.js"></script>
    <script src="${docsPath}/init.js"></script>
  </body>
</html>
`;

const securityHeaders = {
  // Swagger UI sets inline styles; scripts come only from this origin.
  "content-security-policy":
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'",
  "x-content-type-options": "nosniff",
};

const cache = new Map<string, Buffer>();

/** Serves GET /docs and its assets; returns false when `pathname` is not a docs path. */
export async function serveDocs(pathname: string, response: ServerResponse): Promise<boolean> {
  if (pathname === docsPath || pathname === `${docsPath}/`) {
    send(response, "text/html; charset=utf-8", page, "no-cache");
    return true;
  }
  if (pathname === `${docsPath}/init.js`) {
    send(response, "text/javascript; charset=utf-8", initializer, "no-cache");
    return true;
  }
  const name = pathname.startsWith(`${docsPath}/`) ? pathname.slice(docsPath.length + 1) : "";
  const type = Object.hasOwn(assets, name) ? assets[name] : undefined;
  if (type === undefined) return false;
  let content = cache.get(name);
  if (content === undefined) {
    content = await readFile(join(assetDirectory, name));
    cache.set(name, content);
  }
  send(response, type, content, "public, max-age=3600");
  return true;
}

function send(response: ServerResponse, type: string, body: string | Buffer, cacheControl: string): void {
  response.writeHead(200, {
    "content-type": type,
    "content-length": Buffer.byteLength(body),
    "cache-control": cacheControl,
    ...securityHeaders,
  });
  response.end(body);
}
