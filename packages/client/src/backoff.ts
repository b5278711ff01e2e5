// Reconnect delays: exponential, capped, with jitter. After an outage every client of a gateway
// reconnects at about the same moment; the jitter spreads them out, so a restarted gateway is
// not met by one synchronized wave per attempt. "Equal jitter": each delay is at least half its
// exponential step, so delays still grow while the clients are spread over the other half.

export interface BackoffOptions {
  /** The first delay's step; later steps double. Default 250 ms. */
  initialDelayMs?: number;
  /** No delay is longer. Default 10 s. */
  maxDelayMs?: number;
}

export const defaultBackoff = { initialDelayMs: 250, maxDelayMs: 10_000 } as const;

/** Steps above this would overflow the doubling long after the cap was reached. */
const attemptMax = 30;

/** The delay before reconnect `attempt` (0 for the first after a loss); `random` is in [0, 1). */
export function backoffDelayMs(
  attempt: number,
  options: BackoffOptions = {},
  random: () => number = Math.random,
): number {
  const initial = options.initialDelayMs ?? defaultBackoff.initialDelayMs;
  const max = options.maxDelayMs ?? defaultBackoff.maxDelayMs;
  if (!(initial > 0) || !(max >= initial)) {
    throw new RangeError(`backoff: need 0 < initialDelayMs (${initial}) <= maxDelayMs (${max})`);
  }
  const step = Math.min(max, initial * 2 ** Math.min(Math.max(attempt, 0), attemptMax));
  return Math.round(step / 2 + random() * (step / 2));
}
