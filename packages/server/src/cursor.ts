// Page cursors for lists ordered by (time, id), newest first: an opaque base64url token of the
// last row's time and UUID. Only a token this code issued decodes; anything else is refused
// whole with INVALID_ARGUMENT, never half-read (a time Postgres cannot store included).
import { Code, ConnectError } from "@connectrpc/connect";

export interface PageCursor {
  at: Date;
  id: string;
}

const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
/** Rows are written in the present: a cursor's time outside these years was never issued. */
const cursorYears = { min: 2000, max: 9999 } as const;

export function encodePageCursor(cursor: PageCursor): string {
  return Buffer.from(`${cursor.at.toISOString()}|${cursor.id}`).toString("base64url");
}

/** The cursor in `token`, undefined for the first page (""), INVALID_ARGUMENT for anything else. */
export function decodePageCursor(token: string): PageCursor | undefined {
  if (token === "") return undefined;
  const refused = () => new ConnectError("invalid request: page_token: unknown cursor", Code.InvalidArgument);
  const [at = "", id = "", ...rest] = Buffer.from(token, "base64url").toString().split("|");
  const date = new Date(at);
  if (rest.length > 0 || Number.isNaN(date.getTime()) || !uuidPattern.test(id)) throw refused();
  const year = date.getUTCFullYear();
  if (year < cursorYears.min || year > cursorYears.max) throw refused();
  const cursor = { at: date, id };
  if (encodePageCursor(cursor) !== token) throw refused();
  return cursor;
}
