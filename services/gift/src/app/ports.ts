// What the gift use cases need from the outside world, declared here so that they depend on
// these interfaces: store/ implements the repositories, clients/ the calls to the wallet and
// the PK service, and main.ts wires the concrete classes. The dependency points inward: the
// adapters import these types, never the other way round.
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { EntityManager } from "@ovation/db";
import type { BattleState, Side } from "@ovation/proto/gen/ovation/pk/v1/pk_pb.ts";
import type {
  TransferRequestSchema,
  TransferResponse,
} from "@ovation/proto/gen/ovation/wallet/v1/wallet_pb.ts";
import type { CatalogGift } from "../domain/rules.ts";

// ---- Catalog and rooms -------------------------------------------------------------------

/** A room as stored: live while `status` is roomStatus.live. */
export interface RoomRow {
  id: string;
  hostId: string;
  title: string;
  status: number;
  startedAt: Date;
  endedAt?: Date | null | undefined;
}

/** The gift catalog; each change commits with its gift.catalog.changed event. */
export interface GiftCatalog {
  /** Every gift, retired ones too, cheapest first. */
  catalog(): Promise<CatalogGift[]>;
  /** Adds a gift; the same definition again returns it, another one under its id is refused. */
  createGift(gift: Omit<CatalogGift, "active" | "updatedAt">): Promise<CatalogGift>;
  updateGift(id: string, change: (gift: CatalogGift) => void): Promise<CatalogGift>;
}

/** Live rooms; each start and end commits with its gift.room.* event. */
export interface Rooms {
  room(id: string): Promise<RoomRow | null>;
  /** Opens a room for the host, or returns the one already live. */
  startLive(hostId: string, title: string): Promise<RoomRow>;
  endLive(roomId: string, callerId: string, isAdmin: boolean): Promise<RoomRow>;
  /** Rooms that are live now, for the room cache. */
  liveRooms(): Promise<{ id: string; hostId: string }[]>;
}

// ---- Sends --------------------------------------------------------------------------------

/** A claimed send: what its GiftSent payload is built from, stored with the claim. */
export interface SendClaim {
  id: string;
  combo: number;
  createdAt: Date;
  roomId: string;
  hostId: string;
  giftId: string;
  giftName: string;
  unitPrice: bigint;
  pkPoints: bigint;
  animationKey: string;
  count: number;
  senderVipLevel: number;
  /** The payload as first built, for claims made before payloads were rebuilt from the row. */
  event: Uint8Array | undefined;
  /** True when the key was used before with the same request. */
  existing: boolean;
}

export interface SendRequest {
  senderId: string;
  idempotencyKey: string;
  roomId: string;
  giftId: string;
  count: number;
}

/** What a new claim records about the gift and the sender, from the catalog and the token. */
export interface SendSnapshot {
  giftName: string;
  unitPrice: bigint;
  pkPoints: bigint;
  animationKey: string;
  senderVipLevel: number;
}

/** The idempotency record of sends, claimed before any money moves. */
export interface SendClaims {
  /**
   * Records a send (its id, time, combo streak and payload fields), or returns the first claim
   * of its key; refuses with a GiftError when the room is not live or the key was reused.
   */
  claimSend(request: SendRequest, snapshot: SendSnapshot): Promise<SendClaim>;
  /** The claim a key already made, if any. */
  earlierClaim(request: SendRequest): Promise<SendClaim | undefined>;
}

export interface GiftLogRow {
  id: string;
  sender_id: string;
  host_id: string;
  room_id: string;
  gift_id: string;
  gift_name: string;
  count: number;
  total: string;
  combo: number;
  sent_at: Date;
}

export interface LeaderboardRow {
  user_id: string;
  /** Coins, as text (bigint). */
  amount: string;
}

/** The gift log and the leaderboards the gift-log consumer keeps. */
export interface GiftLog {
  history(
    userId: string,
    direction: "sent" | "received",
    limit: number,
    before?: { at: Date; id: string },
  ): Promise<GiftLogRow[]>;
  roomLeaderboard(roomId: string, limit: number): Promise<LeaderboardRow[]>;
  hostLeaderboard(period: string, limit: number): Promise<LeaderboardRow[]>;
}

/** Everything the gift API reads and writes in the gift schema, but boosts. */
export interface GiftRepository extends GiftCatalog, Rooms, SendClaims, GiftLog {}

// ---- Boosts and discovery -----------------------------------------------------------------

export interface BoostRequest {
  id: string;
  buyerId: string;
  idempotencyKey: string;
  targetType: number;
  targetId: string;
  amount: bigint;
  durationHours: number;
  event: Uint8Array;
}

export type BoostClaim =
  | { outcome: "claimed" | "existing"; id: string; event: Uint8Array }
  | { outcome: "conflict" };

export interface DiscoverRow {
  id: string;
  host_id: string;
  title: string;
  status: number;
  started_at: Date;
  ended_at: Date | null;
  activity: string;
  boost: string;
  boost_expires_at: Date | null;
}

/** The idempotency record of boost purchases and the discovery projection. */
export interface BoostRepository {
  /** A new unit of work; `transactional` on it runs a transaction. */
  fork(): EntityManager;
  /** Records a purchase under its key, or finds the earlier one (or a conflict). */
  claimBoost(request: BoostRequest): Promise<BoostClaim>;
  /** The purchase made earlier under this buyer's key, if any. */
  earlierBoost(
    request: Pick<
      BoostRequest,
      "buyerId" | "idempotencyKey" | "targetType" | "targetId" | "amount" | "durationHours"
    >,
  ): Promise<BoostClaim | undefined>;
  /** True when the user has gone live at least once. */
  isHost(userId: string): Promise<boolean>;
  /** Expires every boost whose time is up, inside the caller's transaction; returns how many. */
  expireDueBoosts(em: EntityManager): Promise<number>;
  /** Live rooms by activity and boosts, best first. */
  discover(limit: number): Promise<DiscoverRow[]>;
}

// ---- Other services -----------------------------------------------------------------------

/** A wallet transfer as the gift service asks for it (the wallet's contract). */
export type TransferInit = MessageInitShape<typeof TransferRequestSchema>;

/**
 * What the wallet answered one transfer: paid (as Transfer would have answered), or refused
 * because the payer's balance is too low, the one refusal a use case acts on. Every other
 * refusal and any infrastructure trouble is thrown (trouble as UNAVAILABLE: retry with the
 * same key).
 */
export type PaymentOutcome = { paid: TransferResponse } | { refused: "insufficient_funds"; message: string };

/** Pays for sends and boosts through the wallet; each transfer carries its event. */
export interface GiftPayments {
  transfer(request: TransferInit): Promise<PaymentOutcome>;
}

/** One side of a PK battle, as far as a boost cares. */
export interface BattleSide {
  state: BattleState;
  /** Hosts on that side who have not declined. */
  hostIds: string[];
}

/** The PK service, asked which hosts a boost of a battle side benefits. */
export interface PkBattles {
  /** The side of the battle; undefined when there is no such battle. */
  sideOfBattle(battleId: string, side: Side): Promise<BattleSide | undefined>;
}
