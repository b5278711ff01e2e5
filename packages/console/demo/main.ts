// `./ov demo [SECONDS]`: against a running `./ov up` (GATEWAY_URL, default
// http://127.0.0.1:8080), seeds the demo world, prints the console's links, then runs the
// simulated audience for SECONDS (default 120, at most 3600) so every console page moves, and
// prints what it did.

import { runAudience } from "./audience.ts";
import { consoleLinks, seedWorld } from "./world.ts";

const defaultSeconds = 120;
const secondsMax = 3_600;
const readyWaitMs = 5_000;

async function main(args: string[]): Promise<number> {
  const seconds = args[0] === undefined ? defaultSeconds : Number(args[0]);
  if (!Number.isInteger(seconds) || seconds < 1 || seconds > secondsMax || args.length > 1) {
    console.error(`usage: ./ov demo [SECONDS]   (1..${secondsMax}, default ${defaultSeconds})`);
    return 2;
  }
  const gatewayUrl = process.env.GATEWAY_URL ?? "http://127.0.0.1:8080";
  const ready = await fetch(`${gatewayUrl}/readyz`, { signal: AbortSignal.timeout(readyWaitMs) }).catch(
    () => undefined,
  );
  if (ready?.ok !== true) {
    console.error(`no ready gateway at ${gatewayUrl}: start the stack with ./ov up (or set GATEWAY_URL)`);
    return 1;
  }
  const world = await seedWorld({ gatewayUrl, battleSeconds: Math.max(60, Math.min(seconds, 1_800)) });
  console.log(
    `seeded: ${world.hosts.length} hosts live, ${world.viewers.length} viewers, ${world.gifts.length} gifts, ` +
      `2 products, campaign code ${world.campaign.code} (${world.campaign.limit} redemptions), a PK battle`,
  );
  console.log("open the console (sign in with a dev token, admin for Operations):");
  for (const [page, link] of Object.entries(consoleLinks(world))) console.log(`  ${page.padEnd(10)} ${link}`);
  console.log(`the audience runs for ${seconds} s…`);
  const counts = await runAudience(world, {
    durationMs: seconds * 1000,
    onProgress: (now) => console.log(`  ${summary(now)}`),
  });
  console.log(`done: ${summary(counts)}`);
  if (counts.lastFailure !== undefined) console.log(`last failure: ${counts.lastFailure}`);
  return counts.failed > 0 && counts.gifts === 0 ? 1 : 0;
}

const summary = (counts: Awaited<ReturnType<typeof runAudience>>) =>
  `${counts.gifts} gifts, ${counts.redemptions} redemptions, ${counts.orders} orders, ${counts.boosts} boosts, ` +
  `${counts.refused} refused, ${counts.failed} failed`;

process.exitCode = await main(process.argv.slice(2)).catch((error: unknown) => {
  console.error(error instanceof Error ? error.message : String(error));
  return 1;
});
