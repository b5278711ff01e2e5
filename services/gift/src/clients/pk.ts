// The PK service, as the boost use case needs it (PkBattles, app/ports.ts): which hosts are on
// one side of a battle. NOT_FOUND becomes "no such battle" (undefined); anything else, and
// infrastructure trouble above all (UNAVAILABLE: the buyer retries with the same key), is thrown.
import { type Client, Code, ConnectError } from "@connectrpc/connect";
import {
  BattleState,
  ParticipantStatus,
  type PkService,
  type Side,
} from "@ovation/proto/gen/ovation/pk/v1/pk_pb.ts";
import type { BattleSide, PkBattles } from "../app/ports.ts";

export class PkBattlesClient implements PkBattles {
  readonly #pk: Client<typeof PkService>;

  constructor(pk: Client<typeof PkService>) {
    this.#pk = pk;
  }

  async sideOfBattle(battleId: string, side: Side): Promise<BattleSide | undefined> {
    let battle: Awaited<ReturnType<Client<typeof PkService>["getBattle"]>>["battle"];
    try {
      battle = (await this.#pk.getBattle({ battleId })).battle;
    } catch (error) {
      if (ConnectError.from(error).code === Code.NotFound) return undefined;
      throw error;
    }
    // A battle without a body is no battle a boost can back: the use case calls it over.
    if (battle === undefined) return { state: BattleState.UNSPECIFIED, hostIds: [] };
    return {
      state: battle.state,
      hostIds: battle.participants
        .filter((p) => p.side === side && p.status !== ParticipantStatus.DECLINED)
        .map((p) => p.hostId),
    };
  }
}

/** Without PK_URL, PK sides cannot be boosted: every question answers UNAVAILABLE. */
export const pkNotConfigured: PkBattles = {
  sideOfBattle() {
    return Promise.reject(new ConnectError("PK battles are not configured (PK_URL)", Code.Unavailable));
  },
};
