// Request validation shared by every service: a zod schema per request, and one error shape.
// A bad request gets INVALID_ARGUMENT naming each bad field (in proto snake_case) and nothing
// runs, so nothing changes.
import { Code, ConnectError } from "@connectrpc/connect";
import type { z } from "zod";

export function validateRequest<Schema extends z.ZodType>(
  schema: Schema,
  request: unknown,
): z.output<Schema> {
  const result = schema.safeParse(request);
  if (result.success) return result.data;
  const problems = result.error.issues.map((issue) => `${snakeCase(issue.path.join("."))}: ${issue.message}`);
  throw new ConnectError(`invalid request: ${problems.join("; ")}`, Code.InvalidArgument);
}

const snakeCase = (path: string) => path.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

/** Printable ASCII without spaces, 1..128: the idempotency key every write takes. */
export const idempotencyKeyPattern = /^[\x21-\x7e]{1,128}$/;
