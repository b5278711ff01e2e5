// grpc.health.v1: Check, List and Watch, so load balancers, grpc_health_probe and `buf curl` can ask
// whether a service is serving. The empty service name stands for the whole process.

import { create } from "@bufbuild/protobuf";
import type { ConnectRouter } from "@connectrpc/connect";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  Health,
  HealthCheckResponseSchema,
  HealthCheckResponse_ServingStatus as ServingStatus,
} from "@ovation/proto/gen/grpc/health/v1/health_pb.ts";

export { ServingStatus };

type Status = (typeof ServingStatus)[keyof typeof ServingStatus];

export class HealthStatus {
  readonly #statuses = new Map<string, Status>();
  readonly #watchers = new Set<() => void>();

  constructor(serviceNames: readonly string[]) {
    for (const name of ["", ...serviceNames]) this.#statuses.set(name, ServingStatus.SERVING);
  }

  get(service: string): Status | undefined {
    return this.#statuses.get(service);
  }

  /** Sets every known service (and the process) to `status`; used on shutdown. */
  setAll(status: Status): void {
    for (const name of this.#statuses.keys()) this.#statuses.set(name, status);
    for (const notify of this.#watchers) notify();
  }

  get serving(): boolean {
    return this.#statuses.get("") === ServingStatus.SERVING;
  }

  register(router: ConnectRouter): void {
    router.service(Health, {
      check: (request) => {
        const status = this.get(request.service);
        if (status === undefined) throw new ConnectError(`unknown service ${request.service}`, Code.NotFound);
        return { status };
      },
      list: () => ({
        statuses: Object.fromEntries([...this.#statuses].map(([name, status]) => [name, { status }])),
      }),
      watch: (request, ctx) => this.#watch(request.service, ctx.signal),
    });
  }

  async *#watch(service: string, signal: AbortSignal) {
    let last: Status | undefined;
    while (!signal.aborted) {
      const status = this.get(service) ?? ServingStatus.SERVICE_UNKNOWN;
      if (status !== last) {
        last = status;
        yield create(HealthCheckResponseSchema, { status });
      }
      await new Promise<void>((resolve) => {
        const done = () => {
          this.#watchers.delete(done);
          signal.removeEventListener("abort", done);
          resolve();
        };
        this.#watchers.add(done);
        signal.addEventListener("abort", done);
      });
    }
  }
}
