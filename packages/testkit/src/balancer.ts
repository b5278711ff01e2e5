// A TCP load balancer in front of a service's replicas, as a Kubernetes Service or any layer-4
// balancer fronts them: each new connection goes to the next replica in turn, and a replica that
// refuses it (killed, not yet restarted) is skipped for the next one. An open connection stays
// with its replica: when that replica dies the connection closes, and the client's next one
// lands on a live replica. Calls between services ride one long HTTP/2 connection each, so this
// is also how they fail over in a deployment.
import net from "node:net";

const host = "127.0.0.1";

export interface Balancer {
  readonly url: string;
  readonly port: number;
  /** Connections accepted since start, and those no replica took. */
  readonly accepted: number;
  readonly refused: number;
  /** Stops listening and closes every connection it carries. */
  close(): Promise<void>;
}

/** Balances connections over the replicas listening on `ports` of 127.0.0.1, round robin. */
export async function startBalancer(ports: readonly number[]): Promise<Balancer> {
  if (ports.length === 0) throw new Error("a balancer needs at least one replica");
  const open = new Set<net.Socket>();
  let next = 0;
  let accepted = 0;
  let refused = 0;
  const server = net.createServer({ pauseOnConnect: true }, (client) => {
    accepted++;
    open.add(client);
    client.once("close", () => open.delete(client));
    // A client that gives up while a replica is being found: nothing to carry on.
    client.on("error", () => client.destroy());
    const first = next++ % ports.length;
    const attempt = (tried: number) => {
      if (tried === ports.length || client.destroyed) {
        refused++;
        // A reset, not a close: the client knows at once that nothing will answer.
        if (!client.destroyed) client.resetAndDestroy();
        return;
      }
      const upstream = net.connect(ports[(first + tried) % ports.length]!, host);
      upstream.once("error", () => {
        upstream.destroy();
        attempt(tried + 1);
      });
      upstream.once("connect", () => {
        upstream.removeAllListeners("error");
        open.add(upstream);
        upstream.once("close", () => open.delete(upstream));
        // An end travels through the pipes (with what was still on its way); a failure on one
        // side, such as the reset of a killed replica, ends the other side at once.
        upstream.on("error", () => client.destroy());
        client.on("error", () => upstream.destroy());
        client.pipe(upstream);
        upstream.pipe(client);
        client.resume();
      });
    };
    attempt(0);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, host, resolve);
  });
  const port = (server.address() as net.AddressInfo).port;
  return {
    url: `http://${host}:${port}`,
    port,
    get accepted() {
      return accepted;
    },
    get refused() {
      return refused;
    },
    async close() {
      const closed = new Promise((resolve) => server.close(resolve));
      for (const socket of open) socket.destroy();
      await closed;
    },
  };
}
