// `./ov soak NAME` runs services/*/soak/NAME.soak.ts: a long run of the whole stack under load
// and faults that prints its figures and checks, and exits 1 when a check failed. `cluster`
// and `failover` live with the gateway, the front door their clients use.
import { runNamedScript } from "./named-script.ts";

runNamedScript("soak", process.argv.slice(2));
