// Operator commands on the configured database and NATS (DATABASE_URL, NATS_URL,
// OVATION_PREFIX), run through the wrapper:
//   ./ov replay gift-discovery [--from SEQUENCE|ISO_TIME]   rebuilds the discovery ranking's
//        boosts from the WALLET stream into fresh tables and swaps them in while the gift
//        service keeps running (packages/events/src/replay.ts)
import { replayCommand } from "@ovation/events";
import { discoveryConsumer } from "./events/discovery-consumer.ts";
import { giftSchema } from "./main.ts";
import { DiscoveryStore } from "./store/discovery-store.ts";

// `./ov replay` finds this file by this line: keep the consumer's name right after "replay".
const usage = "usage: replay gift-discovery [--from SEQUENCE|ISO_TIME]";

if (import.meta.main)
  process.exitCode = await replayCommand(process.argv.slice(2), {
    name: "gift",
    schema: giftSchema,
    usage,
    projections: (orm) => [discoveryConsumer(new DiscoveryStore(orm))],
  });
