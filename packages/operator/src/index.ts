// The operator commands read a service's tables at DATABASE_URL. Pointed at the wrong database,
// or at one no service has run on yet, or given a schema name that does not exist, they would
// end in a driver's stack trace ("relation "nosuch.outbox" does not exist"); this check says
// what is wrong in one line first, and lists the schemas that do hold the table.
import { redactUrl } from "@ovation/config";
import { databaseClient } from "@ovation/db";

/** A look at a local or remote database: long enough for a slow network, short for a person. */
const connectTimeoutMs = 5_000;

/** Why `schema.table` cannot be read at `databaseUrl`, for a person; undefined when it can. */
export async function missingTable(
  databaseUrl: string,
  schema: string,
  table: string,
): Promise<string | undefined> {
  const where = `the database at ${redactUrl(databaseUrl)}`;
  const client = databaseClient(databaseUrl, { connectionTimeoutMillis: connectTimeoutMs });
  // A connection the server drops after a failed connect must not crash the command as an event.
  client.on("error", () => {});
  try {
    await client.connect();
  } catch (error) {
    return `cannot reach ${where} (DATABASE_URL): ${error instanceof Error ? error.message : String(error)}`;
  }
  try {
    const { rows } = await client.query<{ schema: string }>(
      "select table_schema as schema from information_schema.tables where table_name = $1 order by 1",
      [table],
    );
    const schemas = rows.map((row) => row.schema);
    if (schemas.includes(schema)) return undefined;
    return schemas.length === 0
      ? `${where} has no table named ${table} in any schema: no service has run on it. Is DATABASE_URL the database of the services?`
      : `${where} has no table ${schema}.${table}; the schemas with a table named ${table}: ${schemas.join(", ")}`;
  } finally {
    await client.end().catch(() => {});
  }
}
