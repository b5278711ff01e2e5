// `./ov jobs …`: durable timers that gave up, on the database at DATABASE_URL (every service's
// jobs share its `ovation_jobs` schema).
//   ./ov jobs failed        jobs that used every attempt, with their last error
//   ./ov jobs retry ID      gives one its attempts back and makes it due now
// A database without the jobs schema (a wrong DATABASE_URL, or no service has run on it yet)
// is said so in one line, with exit code 1.
import { infrastructureConfigSchema, loadConfig } from "@ovation/config";
import { databasePool } from "@ovation/db";
import { missingTable } from "@ovation/operator";
import { failedJobs, jobsSchema, retryJob } from "./index.ts";

const usage = "usage: ./ov jobs failed | ./ov jobs retry ID";

export async function jobsCommand(args: readonly string[], databaseUrl: string): Promise<number> {
  const [verb, id] = args;
  if (verb !== "failed" && !(verb === "retry" && id !== undefined)) {
    console.error(usage);
    return 2;
  }
  const problem = await missingTable(databaseUrl, jobsSchema, "jobs");
  if (problem !== undefined) {
    console.error(problem);
    return 1;
  }
  const pool = databasePool(databaseUrl, { max: 1 });
  // A connection the server drops while idle is the pool's to replace, not a crash.
  pool.on("error", () => {});
  try {
    if (verb === "failed") {
      const jobs = await failedJobs(pool);
      for (const job of jobs) console.log(JSON.stringify({ ...job, runAt: job.runAt.toISOString() }));
      console.log(jobs.length === 0 ? "no failed jobs" : `${jobs.length} failed jobs`);
      return 0;
    }
    if (await retryJob(pool, id!)) {
      console.log(`job ${id} is due again`);
      return 0;
    }
    console.error(`no failed job ${id}`);
    return 1;
  } finally {
    await pool.end();
  }
}

if (import.meta.main) {
  const config = loadConfig(infrastructureConfigSchema, process.env);
  process.exitCode = await jobsCommand(process.argv.slice(2), config.DATABASE_URL);
}
