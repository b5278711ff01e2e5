// Proves that the gateway's port accepts a burst of new connections several at a time while its
// event loop is busy (decision 0049): the loop is blocked while a client process opens its
// connections, so they wait in the kernel's accept queues, and then each turn of the loop is
// counted. With one listening socket Node takes one connection per turn; with sixteen it takes
// one per socket that holds any. Every connection is then answered by the one HTTP server, and
// closing stops every socket from accepting.
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { listenOnSockets } from "../src/listeners.ts";

const connections = 64;
const blockMaxMs = 20_000;
const folder = mkdtempSync(join(tmpdir(), "ovation-listeners-"));
afterAll(() => rmSync(folder, { recursive: true, force: true }));

/**
 * The client, in its own process: opens every connection, sends a request on each, writes the
 * marker file once all are connected (the kernel completes a handshake without the server's
 * loop), then prints how many got a 200.
 */
const clientSource = `
const net = require("node:net");
const { writeFileSync } = require("node:fs");
const [port, count, marker] = process.argv.slice(1);
let connected = 0, answered = 0, closed = 0;
for (let i = 0; i < Number(count); i++) {
  const socket = net.connect(Number(port), "127.0.0.1", () => {
    socket.write("GET /healthz HTTP/1.1\\r\\nhost: test\\r\\nconnection: close\\r\\n\\r\\n");
    if (++connected === Number(count)) writeFileSync(marker, "");
  });
  let text = "";
  socket.on("data", (chunk) => (text += chunk));
  socket.on("error", () => {});
  socket.on("close", () => {
    if (text.startsWith("HTTP/1.1 200")) answered++;
    if (++closed === Number(count)) console.log(answered);
  });
}`;

async function burst(sockets: number): Promise<{ mostInOneTurn: number; answered: number }> {
  const server = http.createServer((_request, response) => response.end("ok"));
  const listeners = await listenOnSockets(server, { port: 0, host: "127.0.0.1", backlog: 511, sockets });
  try {
    const marker = join(folder, `connected-${sockets}`);
    // Connections accepted in each turn of the loop: a check-phase callback closes each turn.
    const perTurn = [0];
    server.on("connection", () => perTurn[perTurn.length - 1]!++);
    let counting = true;
    const nextTurn = () => {
      perTurn.push(0);
      if (counting) setImmediate(nextTurn);
    };
    const client = spawn(
      process.execPath,
      ["-e", clientSource, String(listeners.port), String(connections), marker],
      {
        stdio: ["ignore", "pipe", "inherit"],
      },
    );
    let output = "";
    client.stdout.on("data", (chunk) => (output += chunk));
    const exited = new Promise((resolve) => client.once("exit", resolve));
    // The loop is blocked (as by a burst of work) until every connection waits to be accepted.
    const deadline = Date.now() + blockMaxMs;
    while (!existsSync(marker)) {
      if (Date.now() > deadline) throw new Error("the client did not connect in time");
    }
    setImmediate(nextTurn);
    await exited;
    counting = false;
    return { mostInOneTurn: Math.max(...perTurn), answered: Number(output.trim()) };
  } finally {
    await listeners.close();
  }
}

describe("listening on several sockets of one port", () => {
  it("accepts one waiting connection per turn of the loop on one socket", async () => {
    const { mostInOneTurn, answered } = await burst(1);
    expect(mostInOneTurn).toBe(1);
    expect(answered).toBe(connections);
  });

  it("accepts several per turn on sixteen sockets, and the HTTP server answers every one", async () => {
    const { mostInOneTurn, answered } = await burst(16);
    // 64 connections spread over 16 sockets leave few of them empty (kernel hashing).
    expect(mostInOneTurn).toBeGreaterThanOrEqual(8);
    expect(answered).toBe(connections);
  });

  it("stops accepting on every socket when closed", async () => {
    const server = http.createServer((_request, response) => response.end("ok"));
    const listeners = await listenOnSockets(server, { port: 0, host: "127.0.0.1", backlog: 511, sockets: 4 });
    await listeners.close();
    const refused = await Promise.all(
      Array.from(
        { length: 16 },
        () =>
          new Promise<string>((resolve) => {
            const socket = net.connect(listeners.port, "127.0.0.1", () => {
              socket.destroy();
              resolve("connected");
            });
            socket.on("error", (error: NodeJS.ErrnoException) => resolve(error.code ?? "error"));
          }),
      ),
    );
    expect(refused).toEqual(Array(16).fill("ECONNREFUSED"));
  });
});
