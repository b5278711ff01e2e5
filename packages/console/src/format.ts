// How values read on screen: enum names without their prefix, times in the viewer's clock,
// amounts with their asset.

/** "BATTLE_STATE_ACTIVE" → "active" (the prefix is the enum's name). */
export function enumLabel(value: string | undefined, prefix: string): string {
  if (value === undefined || value === "") return "—";
  return value
    .replace(new RegExp(`^${prefix}_`), "")
    .toLowerCase()
    .replace(/_/g, " ");
}

export function timeLabel(value: string | undefined): string {
  if (value === undefined || value === "") return "—";
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? value : date.toLocaleTimeString();
}

export function coins(amount: string | undefined, asset = "COIN"): string {
  return `${BigInt(amount ?? "0").toLocaleString("en-US")} ${asset}`;
}

/** "4:05" from milliseconds; never negative. */
export function countdown(ms: number): string {
  const seconds = Math.max(0, Math.ceil(ms / 1000));
  return `${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, "0")}`;
}

/** Ids are long: the first characters tell them apart on screen; the title shows them whole. */
export const shortId = (id: string | undefined) => (id === undefined ? "—" : id.slice(0, 8));
