// Proves the balancer does what the replicated stack relies on: new connections take turns
// among the replicas, a replica that refuses (killed) is skipped without the client noticing, a
// connection whose replica dies is closed, and with no replica left a connection is reset.
import net from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { startBalancer } from "../src/balancer.ts";
import { freePort } from "../src/processes.ts";

/** A replica that answers every connection with its name and keeps the connection open. */
async function replica(name: string, port?: number): Promise<net.Server> {
  const server = net.createServer((socket) => socket.end(`${name}\n`));
  await new Promise<void>((resolve) => server.listen(port ?? 0, "127.0.0.1", resolve));
  return server;
}
const portOf = (server: net.Server) => (server.address() as net.AddressInfo).port;
const closeServer = (server: net.Server) => new Promise((resolve) => server.close(resolve));

/** Connects through the balancer and reads what the replica says, or how the connection ended. */
function ask(port: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = net.connect(port, "127.0.0.1");
    let heard = "";
    socket.on("data", (chunk) => {
      heard += chunk;
    });
    socket.on("error", (error: NodeJS.ErrnoException) => resolve(error.code ?? "error"));
    socket.on("close", () => resolve(heard.trim()));
  });
}

const servers: net.Server[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map(closeServer));
});

describe("balancer", () => {
  it("takes the replicas in turn, skips one that refuses, and resets when none is left", async () => {
    const a = await replica("a");
    const b = await replica("b");
    const gone = await freePort();
    servers.push(a, b);
    const bPort = portOf(b);
    const balancer = await startBalancer([portOf(a), gone, bPort]);
    try {
      const answers = [];
      for (let i = 0; i < 6; i++) answers.push(await ask(balancer.port));
      // Turns a, gone → b, b, then again: the refusing replica costs the client nothing.
      expect(answers).toEqual(["a", "b", "b", "a", "b", "b"]);
      expect(balancer.refused).toBe(0);

      await Promise.all(servers.splice(0).map(closeServer));
      expect(await ask(balancer.port)).toBe("ECONNRESET");
      expect(balancer.refused).toBe(1);
      // A replica back on its port is used again.
      servers.push(await replica("b again", bPort));
      expect(await ask(balancer.port)).toBe("b again");
    } finally {
      await balancer.close();
    }
  });

  it("closes a client's connection when its replica dies", async () => {
    const held = new Set<net.Socket>();
    const server = net.createServer((socket) => held.add(socket));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    servers.push(server);
    const balancer = await startBalancer([portOf(server)]);
    try {
      const client = net.connect(balancer.port, "127.0.0.1");
      client.on("error", () => {});
      const closed = new Promise((resolve) => client.once("close", resolve));
      await new Promise((resolve) => client.once("connect", resolve));
      // Until the replica has the connection, there is nothing to kill.
      await (async () => {
        while (held.size === 0) await new Promise((resolve) => setTimeout(resolve, 5));
      })();
      for (const socket of held) socket.resetAndDestroy();
      await closed;
      expect(client.destroyed).toBe(true);
    } finally {
      await balancer.close();
    }
  });
});
