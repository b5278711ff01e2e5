// Revenue share of a gift between its host and the platform. Shares are in basis points and
// split per gift (not per batch), so how gifts are batched never changes who gets what.

export const basisPoints = 10_000n;

export function splitGift(total: bigint, hostShareBps: number): { host: bigint; platform: bigint } {
  if (total < 0n) throw new RangeError("gift total must not be negative");
  if (!Number.isInteger(hostShareBps) || hostShareBps < 0 || hostShareBps > 10_000) {
    throw new RangeError("host share must be 0..10000 basis points");
  }
  const host = (total * BigInt(hostShareBps)) / basisPoints;
  return { host, platform: total - host };
}

export interface HostCredit {
  hostId: string;
  amount: bigint;
  gifts: number;
}

/** Sums a batch of gifts into one credit per host and one platform total. */
export function creditsOf(
  gifts: readonly { hostId: string; total: bigint }[],
  hostShareBps: number,
): { hosts: HostCredit[]; platform: bigint } {
  const hosts = new Map<string, HostCredit>();
  let platform = 0n;
  for (const gift of gifts) {
    const split = splitGift(gift.total, hostShareBps);
    const credit = hosts.get(gift.hostId) ?? { hostId: gift.hostId, amount: 0n, gifts: 0 };
    credit.amount += split.host;
    credit.gifts += 1;
    hosts.set(gift.hostId, credit);
    platform += split.platform;
  }
  return { hosts: [...hosts.values()], platform };
}
