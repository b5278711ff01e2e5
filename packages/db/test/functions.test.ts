// Proves the function files mechanism: openDatabase applies a schema's SQL function files after
// its migrations, again only when a file's content changed or a migration ran, in the same
// transaction as the migrations (a broken file leaves no half-upgraded schema), and replicas
// starting together on a fresh schema migrate it once without failing.
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { testEnvironment } from "@ovation/testkit";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Migration, openDatabase, withFunctions } from "../src/index.ts";

class Things extends Migration {
  override async up() {
    this.addSql("create table things (id int primary key, size int not null)");
  }
}

class MoreThings extends Migration {
  override async up() {
    this.addSql("alter table things add column colour text not null default 'red'");
  }
}

const first = [{ name: "0001_things", class: Things }];
const second = [...first, { name: "0002_more_things", class: MoreThings }];

let env: Awaited<ReturnType<typeof testEnvironment>>;
let directory: string;
let db: pg.Client;

beforeAll(async () => {
  env = await testEnvironment();
  directory = await mkdtemp(path.join(tmpdir(), "ovation-functions-"));
  db = new pg.Client({ connectionString: env.databaseUrl });
  await db.connect();
});
afterAll(async () => {
  await db?.end();
  await rm(directory, { recursive: true, force: true });
  await env?.[Symbol.asyncDispose]();
});

/** Writes `<name>.sql` and returns its path. */
async function functionFile(name: string, sql: string): Promise<string> {
  const file = path.join(directory, `${name}.sql`);
  await writeFile(file, sql);
  return file;
}

const biggest = (body: string) => `
-- The size of the biggest thing (test function).
create or replace function biggest() returns int language sql set search_path from current as $$ ${body} $$;`;

async function open(schema: string, migrations: typeof first, functions: string[]) {
  const orm = await openDatabase({
    url: env.databaseUrl,
    schema,
    entities: [],
    migrations,
    functions,
    poolMax: 2,
  });
  await orm.close();
}

async function appliedAt(schema: string): Promise<Map<string, number>> {
  const { rows } = await db.query<{ name: string; applied_at: Date }>(
    `select name, applied_at from ${schema}.schema_functions`,
  );
  return new Map(rows.map((row) => [row.name, row.applied_at.getTime()]));
}

describe("SQL function files", () => {
  it("applies a file after the migrations, and again only when its content changed or a migration ran", async () => {
    const files = [
      await functionFile("biggest", biggest("select max(size) from things")),
      await functionFile(
        "smallest",
        "create or replace function smallest() returns int language sql as $$ select 0 $$;",
      ),
    ];
    await open("fn_apply", first, files);
    await db.query("insert into fn_apply.things values (1, 5), (2, 7)");
    expect((await db.query("select fn_apply.biggest() as n")).rows[0].n).toBe(7);
    const initially = await appliedAt("fn_apply");
    expect([...initially.keys()].sort()).toEqual(["biggest", "smallest"]);

    await open("fn_apply", first, files);
    expect(await appliedAt("fn_apply")).toEqual(initially);

    await functionFile("biggest", biggest("select max(size) * 10 from things"));
    await open("fn_apply", first, files);
    expect((await db.query("select fn_apply.biggest() as n")).rows[0].n).toBe(70);
    const afterChange = await appliedAt("fn_apply");
    expect(afterChange.get("biggest")).toBeGreaterThan(initially.get("biggest")!);
    expect(afterChange.get("smallest")).toBe(initially.get("smallest"));

    await open("fn_apply", second, files);
    const afterMigration = await appliedAt("fn_apply");
    expect(afterMigration.get("smallest")).toBeGreaterThan(afterChange.get("smallest")!);
  });

  it("takes the files the migration list declares, in its order", async () => {
    const files = [
      await functionFile(
        "base_size",
        "create or replace function base_size() returns int language sql set search_path from current as $$ select 3 $$;",
      ),
      await functionFile(
        "double_size",
        "create or replace function double_size() returns int language sql set search_path from current as $$ select 2 * base_size() $$;",
      ),
    ];
    const orm = await openDatabase({
      url: env.databaseUrl,
      schema: "fn_declared",
      entities: [],
      migrations: withFunctions(first, files),
      poolMax: 2,
    });
    await orm.close();
    expect((await db.query("select fn_declared.double_size() as n")).rows[0].n).toBe(6);
  });

  it("keeps nothing of a start-up whose function file fails: neither the migrations nor other files", async () => {
    const good = await functionFile(
      "good",
      "create or replace function good() returns int language sql as $$ select 1 $$;",
    );
    const broken = await functionFile(
      "broken",
      "create or replace function broken() returns int language sql as $$ select nope $$;",
    );
    await expect(open("fn_broken", first, [good, broken])).rejects.toThrow(/broken\.sql/);
    // Only MikroORM's migration table is left (it creates it on its own), and it is empty.
    const { rows: tables } = await db.query(
      "select table_name from information_schema.tables where table_schema = 'fn_broken'",
    );
    expect(tables).toEqual([{ table_name: "schema_migrations" }]);
    expect((await db.query("select count(*)::int as n from fn_broken.schema_migrations")).rows[0].n).toBe(0);
    const { rows: functions } = await db.query(
      "select proname from pg_proc where pronamespace = 'fn_broken'::regnamespace",
    );
    expect(functions).toEqual([]);
  });

  it("migrates a fresh schema once when replicas start together", async () => {
    const files = [await functionFile("biggest", biggest("select max(size) from things"))];
    const replicas = await Promise.allSettled(
      Array.from({ length: 4 }, () => open("fn_replicas", second, files)),
    );
    expect(replicas.map((replica) => replica.status)).toEqual([
      "fulfilled",
      "fulfilled",
      "fulfilled",
      "fulfilled",
    ]);
    const { rows } = await db.query("select name from fn_replicas.schema_migrations order by id");
    expect(rows.map((row) => row.name)).toEqual(["0001_things", "0002_more_things"]);
  });

  it("refuses a file that is not named <function>.sql", async () => {
    const odd = await functionFile("Odd-Name", "select 1;");
    await expect(open("fn_odd", first, [odd])).rejects.toThrow(/lower_snake_case/);
  });
});
