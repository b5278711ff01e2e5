// The migrations of an events test's schema: the event tables every service has, their SQL
// function, and the test's own table.
import { Migration, withFunctions } from "@ovation/db";
import { eventFunctionFiles, eventTablesSql } from "../src/index.ts";

export function eventTestMigrations(tableSql: string) {
  class CreateTables extends Migration {
    override async up() {
      for (const sql of eventTablesSql) this.addSql(sql);
      this.addSql(tableSql);
    }
  }
  return withFunctions([{ name: "0001_tables", class: CreateTables }], eventFunctionFiles);
}
