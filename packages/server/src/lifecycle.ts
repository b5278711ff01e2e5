// The end of every service's main: on SIGINT or SIGTERM, close (which drains in-flight work)
// and exit 0, or 1 when closing failed.
import type { Logger } from "./logger.ts";

export interface Closable {
  logger: Logger;
  close(): Promise<void>;
}

export function closeOnSignals(app: Closable): void {
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    process.once(signal, () => {
      app.logger.info({ signal }, "shutting down");
      app.close().then(
        () => process.exit(0),
        (error) => {
          app.logger.error({ err: error }, "shutdown failed");
          process.exit(1);
        },
      );
    });
  }
}
