// How a page stays live: a channel subscription where the gateway pushes (rooms, battles,
// campaigns), and polling where it does not (discovery, consumer lag, an admin's view of an
// order). Both stop when the page goes away, so an open console costs the gateway only what
// the page on screen needs.
import { ApiError, type ChannelName, type MessageOf, type OvationClient } from "@ovation/client";
import { useEffect, useRef, useState } from "preact/hooks";

export interface Loaded<Value> {
  value: Value | undefined;
  /** The last failure in words; cleared by the next success. */
  error: string | undefined;
  /** Load again now (after an action changed what the page shows). */
  reload: () => void;
}

/** A failure as a person should read it: the gateway's message, or what went wrong locally. */
export function describeError(error: unknown): string {
  if (error instanceof ApiError) return `${error.message} (${error.code})`;
  return error instanceof Error ? error.message : String(error);
}

/**
 * Calls `load` now, again every `intervalMs` (0: only when asked), and whenever `key` changes.
 * A slow answer never overtakes a newer one.
 */
export function usePoll<Value>(
  load: () => Promise<Value>,
  intervalMs: number,
  key: unknown[],
): Loaded<Value> {
  const [value, setValue] = useState<Value | undefined>(undefined);
  const [error, setError] = useState<string | undefined>(undefined);
  const [tick, setTick] = useState(0);
  const latest = useRef(0);
  useEffect(() => {
    let stopped = false;
    const run = async () => {
      const call = ++latest.current;
      try {
        const loaded = await load();
        if (!stopped && call === latest.current) {
          setValue(() => loaded);
          setError(undefined);
        }
      } catch (failure) {
        if (!stopped && call === latest.current) setError(describeError(failure));
      }
    };
    void run();
    const timer = intervalMs > 0 ? setInterval(() => void run(), intervalMs) : undefined;
    return () => {
      stopped = true;
      clearInterval(timer);
    };
  }, [...key, tick, intervalMs]);
  return { value, error, reload: () => setTick((count) => count + 1) };
}

export type ChannelState = "connecting" | "live" | "refused";

/**
 * Subscribes to `channel` while the component is on screen. `onSubscribed` runs at every
 * confirmation (first and after each reconnect): the place to read the current state over REST,
 * since nothing is replayed for the time the socket was away.
 */
export function useChannel<Name extends ChannelName>(
  client: OvationClient,
  channel: Name | undefined,
  onMessage: (message: MessageOf<Name>) => void,
  onSubscribed?: () => void,
): ChannelState {
  const [state, setState] = useState<ChannelState>("connecting");
  // The latest callbacks, without resubscribing on every render.
  const handlers = useRef({ onMessage, onSubscribed });
  handlers.current = { onMessage, onSubscribed };
  useEffect(() => {
    if (channel === undefined) return;
    setState("connecting");
    const subscription = client.channels.subscribe(
      channel,
      (message) => handlers.current.onMessage(message),
      {
        onSubscribed: () => {
          setState("live");
          handlers.current.onSubscribed?.();
        },
      },
    );
    subscription.ready.catch(() => setState("refused"));
    return () => subscription.unsubscribe();
  }, [client, channel]);
  return state;
}

/** A sample every `intervalMs` of a changing number, as rates per second (for a chart). */
export interface Series {
  times: number[];
  values: number[];
}

/** Keeps the last `points` samples of a series; returns a new object so charts redraw. */
export function appendSample(series: Series, time: number, value: number, points: number): Series {
  return {
    times: [...series.times, time].slice(-points),
    values: [...series.values, value].slice(-points),
  };
}
