// SQL functions live in files of their own (services/<svc>/src/store/sql/<function>.sql), not in
// migrations: a migration runs once, so a function kept there has to be copied into a new
// migration for every change, and the history fills with dead versions. A function file is
// applied at start-up, after the migrations, whenever its content differs from what the
// database last applied (its SHA-256 is recorded in the schema's `schema_functions` table), so
// a changed file reaches every database on its next start. Migrations keep tables, types and
// indexes, and drop a function whose signature or return type changes.
//
// Every file is applied again after any migration ran in the same start-up: a migration may
// have dropped or changed what a function depends on (a type, a table's row type).
//
// A file holds the statements that (re)create its function, usually one
// `create or replace function`; it may start with `drop function if exists` of the same
// function when its return type changes. It must not hold data changes: it runs again on
// every change, on every database.
import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { basename } from "node:path";
import { fileURLToPath } from "node:url";
import type { Transaction } from "@mikro-orm/core";
import type { MikroORM } from "@mikro-orm/postgresql";

/** A SQL function file, by URL (`new URL("./sql/f.sql", import.meta.url)`) or absolute path. */
export type SqlFunctionFile = URL | string;

/** A function file read from disk: its name is the file's base name without `.sql`. */
export interface SqlFunctionSource {
  name: string;
  sql: string;
  sha256: string;
}

/** The migrations of a schema, optionally declaring the function files applied after them. */
export type MigrationList<Entry> = Entry[] & { readonly functions?: readonly SqlFunctionFile[] };

const functionNamePattern = /^[a-z][a-z0-9_]{0,62}$/;
/** Files per schema at most: a guard against passing a directory listing by mistake. */
const functionFilesMax = 64;
/** A function file is source code; anything larger is not one. */
const functionFileBytesMax = 256 * 1024;

/**
 * A service's migration list with the SQL function files applied after it, so every caller of
 * openDatabase with these migrations (the service, its CLIs, tests, benchmarks) gets the same
 * functions. Files are applied in this order: a file whose function calls another comes after it.
 */
export function withFunctions<Entry>(
  migrations: Entry[],
  functions: readonly SqlFunctionFile[],
): MigrationList<Entry> {
  return Object.assign([...migrations], { functions: [...functions] });
}

export async function readFunctionFiles(files: readonly SqlFunctionFile[]): Promise<SqlFunctionSource[]> {
  if (files.length > functionFilesMax)
    throw new Error(`${files.length} function files, at most ${functionFilesMax}`);
  const sources: SqlFunctionSource[] = [];
  for (const file of files) {
    const path = typeof file === "string" ? file : fileURLToPath(file);
    const name = basename(path).replace(/\.sql$/, "");
    if (!path.endsWith(".sql") || !functionNamePattern.test(name))
      throw new Error(`function file ${path}: the name must be <function>.sql in lower_snake_case`);
    if (sources.some((source) => source.name === name))
      throw new Error(`function file ${name}.sql listed twice`);
    const sql = await readFile(path, "utf8");
    if (Buffer.byteLength(sql) > functionFileBytesMax)
      throw new Error(`function file ${path} is larger than ${functionFileBytesMax} bytes`);
    sources.push({ name, sql, sha256: createHash("sha256").update(sql).digest("hex") });
  }
  return sources;
}

const createFunctionsTableSql = `create table if not exists schema_functions (
  name text primary key,
  sha256 text not null,
  applied_at timestamptz not null default now())`;

/**
 * Applies, inside the caller's transaction (which holds the schema's start-up lock), every
 * source whose hash differs from the recorded one, or all of them when `all` is set. Returns the
 * names applied. The transaction's search_path is the schema, so unqualified names in the files
 * (and `set search_path from current` in their functions) resolve there.
 */
export async function applyFunctionSources(
  orm: MikroORM,
  transaction: Transaction,
  schema: string,
  sources: readonly SqlFunctionSource[],
  { all = false } = {},
): Promise<string[]> {
  const connection = orm.em.getConnection();
  const execute = (sql: string, params: unknown[] = []) =>
    connection.execute<Record<string, unknown>[]>(sql, params, "all", transaction);
  await execute(`set local search_path to "${schema}"`);
  await execute(createFunctionsTableSql);
  const recorded = new Map(
    (await execute("select name, sha256 from schema_functions")).map((row) => [row.name, row.sha256]),
  );
  const applied: string[] = [];
  for (const source of sources) {
    if (!all && recorded.get(source.name) === source.sha256) continue;
    // No parameters: the file goes through the simple query protocol, several statements at once.
    await execute(source.sql).catch((error: unknown) => {
      throw new Error(`applying ${source.name}.sql to schema ${schema}: ${(error as Error).message}`, {
        cause: error,
      });
    });
    await execute(
      `insert into schema_functions (name, sha256) values (?, ?)
       on conflict (name) do update set sha256 = excluded.sha256, applied_at = now()`,
      [source.name, source.sha256],
    );
    applied.push(source.name);
  }
  return applied;
}
