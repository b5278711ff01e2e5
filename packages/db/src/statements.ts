// Statements sent to Postgres by this process, counted where every one of them passes: the pg
// client's `query`. MikroORM, the raw pool of the hot paths, LISTEN connections and the job
// library all reach Postgres through pg's Client, so one count covers them; benchmarks divide
// it by the operations they ran (statements per operation), and /metrics serves it.
import pg from "pg";
import { Counter } from "prom-client";

/** Registered into the process's registry by @ovation/server, which owns /metrics. */
export const databaseStatements = new Counter({
  name: "ovation_db_statements_total",
  help: "Statements (round trips, including BEGIN and COMMIT) this process sent to Postgres.",
  registers: [],
});

let counting = false;

/** Counts every statement of every pg client in this process from now on (idempotent). */
export function countDatabaseStatements(): void {
  if (counting) return;
  counting = true;
  const query = pg.Client.prototype.query;
  pg.Client.prototype.query = function countedQuery(this: pg.Client, ...args: unknown[]) {
    databaseStatements.inc();
    return (query as (...args: unknown[]) => unknown).apply(this, args);
  } as typeof query;
}
