// Where the tests find the shared Postgres. Its own module so that `./ov test`
// (scripts/test-infra.ts), which starts an embedded Postgres there when nothing answers, reads
// the same address without loading the rest of the kit.
// By path, not as @ovation/db: that package's own tests use this kit (see index.ts).
import { preferUnixSocket } from "../../db/src/socket.ts";

export const testServers = {
  // Through the local server's Unix socket when it has one, as `./ov up` connects (0036).
  postgresUrl: preferUnixSocket(
    process.env.TEST_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres",
  ),
};
