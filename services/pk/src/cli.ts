// Operator commands on the configured database and NATS (DATABASE_URL, NATS_URL,
// OVATION_PREFIX), run through the wrapper:
//   ./ov replay pk-side-boosts [--from SEQUENCE|ISO_TIME]   rebuilds the side boosts shown on
//        battles from the WALLET stream into fresh tables and swaps them in while the PK
//        service keeps running (packages/events/src/replay.ts)
import { replayCommand } from "@ovation/events";
import { sideBoostConsumer } from "./events/side-boost-consumer.ts";
import { pkSchema } from "./main.ts";
import { PkStore } from "./store/pk-store.ts";

// `./ov replay` finds this file by this line: keep the consumer's name right after "replay".
const usage = "usage: replay pk-side-boosts [--from SEQUENCE|ISO_TIME]";

if (import.meta.main)
  process.exitCode = await replayCommand(process.argv.slice(2), {
    name: "pk",
    schema: pkSchema,
    usage,
    projections: (orm) => [sideBoostConsumer(new PkStore(orm))],
  });
