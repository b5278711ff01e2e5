// Request bodies: JSON only, at most requestBodyMaxBytes, valid UTF-8, no key twice in one
// object. A body over the limit is refused from its Content-Length before a byte is read, or as
// soon as it passes the limit.
import type { IncomingMessage } from "node:http";
import { Code } from "@connectrpc/connect";
import { DuplicateKeyError, parseStrictJson } from "../json.ts";
import { badRequest, HttpError } from "./errors.ts";

/** API requests are small (a gift send is ~100 bytes); 64 KiB leaves room and bounds memory. */
export const requestBodyMaxBytes = 64 * 1024;

const jsonMediaType = /^application\/(?:[\w.+-]+\+)?json$/i;
const utf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * After a 413 the rest of an oversized body is read and dropped rather than left unread: closing
 * a connection with unread data makes the kernel reset it, and a client still uploading then
 * loses the answer (EPIPE) instead of reading the 413. Bounded: past this much, or this long,
 * the connection is cut.
 */
const discardMaxBytes = 16 * 1024 * 1024;
const discardTimeoutMs = 10_000;

/** Reads and drops the rest of a refused request's body, so its client can read the answer. */
export function discardRestOfBody(request: IncomingMessage): void {
  if (request.complete) return;
  let discarded = 0;
  const cut = () => request.socket.destroy();
  const timer = setTimeout(cut, discardTimeoutMs);
  timer.unref();
  request.on("data", (chunk: Buffer) => {
    discarded += chunk.length;
    if (discarded > discardMaxBytes) {
      clearTimeout(timer);
      cut();
    }
  });
  request.once("end", () => clearTimeout(timer));
  request.once("close", () => clearTimeout(timer));
  request.resume();
}

export class BodyTooLargeError extends HttpError {
  constructor() {
    super(413, Code.ResourceExhausted, `request body over ${requestBodyMaxBytes} bytes`);
  }
}

/** Reads and parses the JSON body; undefined when the request has no body. */
export async function readJsonBody(request: IncomingMessage): Promise<unknown> {
  const declared = request.headers["content-length"];
  if (declared !== undefined && Number(declared) > requestBodyMaxBytes) throw new BodyTooLargeError();
  const encoding = request.headers["content-encoding"];
  if (encoding !== undefined && encoding !== "identity") {
    throw new HttpError(415, Code.InvalidArgument, "compressed request bodies are not accepted");
  }
  const bytes = await readAll(request);
  if (bytes.length === 0) return undefined;
  const type = (request.headers["content-type"] ?? "").split(";")[0]!.trim();
  if (!jsonMediaType.test(type)) {
    throw new HttpError(415, Code.InvalidArgument, "request bodies must be application/json");
  }
  return parseJson(bytes);
}

async function readAll(request: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  try {
    // destroyOnReturn: false keeps the socket open, so the 413 can still be sent.
    for await (const chunk of request.iterator({ destroyOnReturn: false })) {
      total += (chunk as Buffer).length;
      if (total > requestBodyMaxBytes) throw new BodyTooLargeError();
      chunks.push(chunk as Buffer);
    }
  } catch (error) {
    if (error instanceof HttpError) throw error;
    throw badRequest("the request body could not be read");
  }
  return Buffer.concat(chunks, total);
}

export function parseJson(bytes: Uint8Array): unknown {
  let text: string;
  try {
    text = utf8.decode(bytes);
  } catch {
    throw badRequest("the request body is not valid UTF-8");
  }
  try {
    return parseStrictJson(text);
  } catch (error) {
    if (error instanceof DuplicateKeyError) throw badRequest(`invalid request: ${error.message}`);
    throw badRequest(`malformed JSON: ${(error as Error).message}`);
  }
}
