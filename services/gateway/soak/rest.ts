// REST calls as a careful client makes them: every write carries an idempotency key, and an
// answer that says "not now" (503, shed or a service away), "unknown" (504, a deadline passed
// with the outcome unknown) or no answer at all (the connection broke: a gateway killed, a
// balancer with no replica to give) is asked again with the same key after a short, growing,
// jittered pause. Any other answer is final. Bounded in time, so a soak always ends.

/** Statuses after which the same request is sent again. */
const retriedStatuses = new Set([503, 504]);
const pauseFirstMs = 50;
const pauseMaxMs = 1_000;

// biome-ignore lint/suspicious/noExplicitAny: untyped JSON from the wire, read by the soak's checks
export type Json = any;

export interface Answer {
  /** The final HTTP status; 0 when the call gave up without one. */
  status: number;
  body: Json;
  /** How many times the request was sent. */
  attempts: number;
  /** When the first attempt started and the final answer came (performance.now()). */
  startedAt: number;
  answeredAt: number;
}

export interface CallOptions {
  token?: string;
  body?: unknown;
  /** The Idempotency-Key header, the same on every attempt. */
  idempotencyKey?: string;
  /** How long to keep trying (default 120 s). */
  giveUpAfterMs?: number;
}

export async function restCall(
  baseUrl: string,
  method: string,
  path: string,
  options: CallOptions = {},
): Promise<Answer> {
  const startedAt = performance.now();
  const giveUpAt = startedAt + (options.giveUpAfterMs ?? 120_000);
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (options.token !== undefined) headers.authorization = `Bearer ${options.token}`;
  if (options.idempotencyKey !== undefined) headers["idempotency-key"] = options.idempotencyKey;
  const body = options.body === undefined ? undefined : JSON.stringify(options.body);
  let pauseMs = pauseFirstMs;
  for (let attempts = 1; ; attempts++) {
    let status = 0;
    let reply: Json;
    try {
      const response = await fetch(`${baseUrl}${path}`, { method, headers, body });
      status = response.status;
      const text = await response.text();
      reply = text === "" ? undefined : JSON.parse(text);
    } catch (error) {
      // No answer: the connection was refused or broke before a reply.
      reply = { error: String((error as Error).cause ?? error) };
    }
    const answeredAt = performance.now();
    if ((status !== 0 && !retriedStatuses.has(status)) || answeredAt >= giveUpAt)
      return { status, body: reply, attempts, startedAt, answeredAt };
    await new Promise((resolve) => setTimeout(resolve, pauseMs * (0.5 + Math.random())));
    pauseMs = Math.min(pauseMaxMs, pauseMs * 2);
  }
}

/** A call that must succeed (setting up a scene): its reply body, or an error naming what failed. */
export async function restOk(
  baseUrl: string,
  method: string,
  path: string,
  options: CallOptions = {},
): Promise<Json> {
  const answer = await restCall(baseUrl, method, path, options);
  if (answer.status !== 200)
    throw new Error(`${method} ${path} answered ${answer.status}: ${JSON.stringify(answer.body)}`);
  return answer.body;
}
