// One port, several listening sockets (SO_REUSEPORT): the kernel spreads new connections over
// them and each hands its connections to the one HTTP server. Node accepts one connection per
// listening socket per turn of its event loop (libuv stopped accepting in a loop in 2022,
// libuv#3696), so while the loop is busy a burst of N new connections waits N turns in the
// accept queue; K sockets accept K per turn (decision 0049).
import type http from "node:http";
import net from "node:net";

export interface ListenOptions {
  /** 0 picks a free port for all the sockets. */
  port: number;
  host: string;
  /** Connections the kernel queues per socket (capped by net.core.somaxconn). */
  backlog: number;
  sockets: number;
}

export interface Listeners {
  port: number;
  /** Stops accepting on every socket; resolves when the HTTP server's own one has closed. */
  close(): Promise<void>;
}

export async function listenOnSockets(server: http.Server, options: ListenOptions): Promise<Listeners> {
  await listen(server, options.port, options);
  const port = (server.address() as net.AddressInfo).port;
  const acceptors = Array.from({ length: options.sockets - 1 }, () =>
    net.createServer((socket) => server.emit("connection", socket)),
  );
  try {
    await Promise.all(acceptors.map((acceptor) => listen(acceptor, port, options)));
  } catch (error) {
    for (const listener of [server, ...acceptors]) listener.close();
    throw error;
  }
  return {
    port,
    close: async () => {
      await Promise.all(
        [server, ...acceptors].map(
          (listener) => new Promise<void>((resolve) => listener.close(() => resolve())),
        ),
      );
    },
  };
}

function listen(listener: net.Server, port: number, options: ListenOptions): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    listener.once("error", reject);
    listener.listen({ port, host: options.host, backlog: options.backlog, reusePort: true }, () => {
      listener.off("error", reject);
      resolve();
    });
  });
}
