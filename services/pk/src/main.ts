// The PK service: battles over RPC, scored by the GIFT stream (pk-score, live scores at most 10 a
// second), hosts' rooms followed, side boosts shown, and invitations, windows and settlements on
// the durable timers. Start, stop and draining are packages/service's.
import { PkService } from "@ovation/proto/gen/ovation/pk/v1/pk_pb.ts";
import { defineService, runService, serve } from "@ovation/service";
import { pkServiceImpl } from "./api/pk-service.ts";
import { type BattleDeps, battleTimers } from "./app/battles.ts";
import { liveScores, liveScoreTasks } from "./app/live-scores.ts";
import { battleTimings, pkConfigSchema, pkServiceName } from "./config.ts";
import { roomEndedConsumer, roomStartedConsumer } from "./events/room-consumers.ts";
import { scoreConsumer, unscoredGifts } from "./events/score-consumer.ts";
import { sideBoostConsumer } from "./events/side-boost-consumer.ts";
import { pkMigrations } from "./store/migrations.ts";
import { PkStore } from "./store/pk-store.ts";

export const pkSchema = "pk";

export const pkService = defineService({
  name: pkServiceName,
  config: pkConfigSchema,
  database: { schema: pkSchema, migrations: pkMigrations },
  publishes: true,
  build({ config, orm, bus, logger, consumerSettings }) {
    const store = new PkStore(orm);
    const deps: BattleDeps = {
      store,
      timings: battleTimings(config),
      unscoredGifts: () => unscoredGifts(bus),
      logger,
    };
    const announcer = liveScores(orm, store, config.PK_LIVE_SCORE_INTERVAL_MS, logger);
    const timers = battleTimers(deps);
    return {
      rpc: {
        services: [PkService],
        routes: (router) => router.service(PkService, pkServiceImpl(deps, store)),
      },
      components: [{ name: "live scores", stop: async () => announcer.stop() }],
      consumers: [
        scoreConsumer(store, announcer, logger, consumerSettings),
        roomStartedConsumer(store, consumerSettings),
        roomEndedConsumer(store, deps, consumerSettings),
        sideBoostConsumer(store, consumerSettings),
      ],
      jobs: { crontab: timers.crontab, tasks: { ...timers.tasks, ...liveScoreTasks(announcer) } },
      expose: { store, deps },
    };
  },
});

export const startPk = (env: Record<string, string | undefined> = process.env) => runService(pkService, env);
export type PkApp = Awaited<ReturnType<typeof startPk>>;

if (import.meta.main) await serve(pkService);
