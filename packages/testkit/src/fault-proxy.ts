// A TCP proxy a test puts between a service and Postgres or NATS, the way Toxiproxy is used:
// the shared servers keep running for every other test, and the test simulates their outage
// by cutting, resetting or slowing only its own connections.
//
//   await using proxy = await FaultProxy.start(postgresUrl);
//   startWallet({ DATABASE_URL: proxy.url(postgresUrl), … });
//   proxy.cut();       // open connections die with a reset, new ones are reset on accept
//   proxy.loseReplies(); // requests reach the server, its answers never come back
//   proxy.latency(500); // every chunk arrives 500 ms after it was sent, as over a long link
//   proxy.restore();   // connections work again
import net from "node:net";

/** Listening address of the proxy; the OS picks a free port. */
const proxyHost = "127.0.0.1";

export type FaultMode = "pass" | "cut" | "lose-replies";

interface Pair {
  client: net.Socket;
  upstream: net.Socket;
  /** Some of the server's bytes were dropped: the connection is unusable once restored. */
  lostReplies: boolean;
}

export class FaultProxy {
  readonly port: number;
  readonly #server: net.Server;
  readonly #target: { host: string; port: number };
  readonly #pairs = new Set<Pair>();
  #mode: FaultMode = "pass";
  #delayMs = 0;
  #latencyMs = 0;
  /** Connections accepted since start, for tests that want to see a reconnect. */
  accepted = 0;

  private constructor(server: net.Server, target: { host: string; port: number }) {
    this.#server = server;
    this.#target = target;
    this.port = (server.address() as net.AddressInfo).port;
  }

  /** Starts a proxy to the host and port of `targetUrl` (postgres://…, nats://…). */
  static async start(targetUrl: string): Promise<FaultProxy> {
    const parsed = new URL(targetUrl);
    const defaultPort = parsed.protocol.startsWith("postgres") ? 5432 : 4222;
    const target = { host: parsed.hostname, port: parsed.port === "" ? defaultPort : Number(parsed.port) };
    const server = net.createServer();
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, proxyHost, resolve);
    });
    const proxy = new FaultProxy(server, target);
    server.on("connection", (client) => proxy.#accept(client));
    return proxy;
  }

  /** `url` with its host and port replaced by the proxy's. */
  url(url: string): string {
    const parsed = new URL(url);
    parsed.hostname = proxyHost;
    parsed.port = String(this.port);
    // A Postgres URL's socket directory (libpq's host=) would go around the proxy.
    parsed.searchParams.delete("host");
    return parsed.toString();
  }

  get mode(): FaultMode {
    return this.#mode;
  }

  /** An outage: open connections are reset and new ones are reset as soon as they arrive. */
  cut(): void {
    this.#mode = "cut";
    this.reset();
  }

  /**
   * Lost replies: what the client sends still reaches the server (and takes effect), but
   * nothing the server sends comes back, so the client's calls run into their deadlines with
   * an unknown outcome.
   */
  loseReplies(): void {
    this.#mode = "lose-replies";
  }

  /**
   * Ends the outage (and any delay): new connections reach the server again. Connections that
   * lost part of a reply are reset, since a stream with a hole in it cannot be read on.
   */
  restore(): void {
    this.#mode = "pass";
    this.#delayMs = 0;
    this.#latencyMs = 0;
    for (const pair of [...this.#pairs].filter((p) => p.lostReplies)) {
      pair.client.resetAndDestroy();
      pair.upstream.destroy();
      this.#pairs.delete(pair);
    }
  }

  /** Resets every open connection (a server restart as the client sees it); new ones work. */
  reset(): void {
    for (const pair of this.#pairs) {
      pair.client.resetAndDestroy();
      pair.upstream.destroy();
    }
    this.#pairs.clear();
  }

  /** Holds every chunk in both directions for `ms` before passing it on (0 turns it off). */
  delay(ms: number): void {
    this.#delayMs = ms;
  }

  /**
   * Every chunk in both directions arrives `ms` after it was sent, in order (0 turns it off).
   * Unlike `delay`, whose holds add up chunk after chunk, a burst of chunks all arrive about
   * `ms` later: a long link rather than a slow one, so many calls can be in flight at once.
   */
  latency(ms: number): void {
    this.#latencyMs = ms;
  }

  async close(): Promise<void> {
    this.reset();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  #accept(client: net.Socket): void {
    this.accepted++;
    if (this.#mode === "cut") {
      client.resetAndDestroy();
      return;
    }
    const upstream = net.connect(this.#target.port, this.#target.host);
    const pair: Pair = { client, upstream, lostReplies: false };
    this.#pairs.add(pair);
    const end = () => {
      this.#pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on("error", end).on("close", end);
    upstream.on("error", end).on("close", end);
    this.#pipe(client, upstream);
    this.#pipe(upstream, client, pair);
  }

  /**
   * Copies `from` to `to`, holding chunks back while a delay is set; order is kept. Replies
   * (`replies` given: the server's side) are dropped while replies are being lost.
   */
  #pipe(from: net.Socket, to: net.Socket, replies?: Pair): void {
    let queue: Promise<void> = Promise.resolve();
    from.on("data", (chunk: Buffer) => {
      if (replies !== undefined && this.#mode === "lose-replies") {
        replies.lostReplies = true;
        return;
      }
      const forward = () => {
        if (!to.destroyed) to.write(chunk);
      };
      if (this.#latencyMs > 0) {
        const dueAt = Date.now() + this.#latencyMs;
        queue = queue
          .then(() => new Promise<void>((resolve) => setTimeout(resolve, dueAt - Date.now())))
          .then(forward);
        return;
      }
      const delayMs = this.#delayMs;
      if (delayMs === 0) {
        queue = queue.then(() => {
          if (!to.destroyed) to.write(chunk);
        });
        return;
      }
      queue = queue.then(
        () =>
          new Promise<void>((resolve) =>
            setTimeout(() => {
              if (!to.destroyed) to.write(chunk);
              resolve();
            }, delayMs),
          ),
      );
    });
  }
}
