// Client JSON, parsed strictly. JSON.parse keeps the last of two equal keys, so a mint with two
// `amount`s or a dev token with two `roles` would silently mean whichever came last, and two
// parsers on the way (a proxy, a log, the gateway) could disagree about what was asked. A
// duplicate key is refused instead, wherever the gateway reads client JSON. JSON.parse still
// does the parsing; jsonc-parser's visitor only reports the keys of each object as written
// (escapes decoded, so "a" and "\u0061" are the same key).
import { type JSONPath, visit } from "jsonc-parser";

export class DuplicateKeyError extends Error {
  override name = "DuplicateKeyError";
  /** The repeated key with its parents, for example "money.amount". */
  readonly path: string;

  constructor(path: string) {
    super(`duplicate key ${path}`);
    this.path = path;
  }
}

/** Parses `text` as JSON; throws SyntaxError when malformed, DuplicateKeyError on a repeated key. */
export function parseStrictJson(text: string): unknown {
  const value: unknown = JSON.parse(text);
  const duplicate = firstDuplicateKey(text);
  if (duplicate !== undefined) throw new DuplicateKeyError(duplicate);
  return value;
}

/** The path of the first key that appears twice in one object, if any. */
function firstDuplicateKey(text: string): string | undefined {
  const open: Set<string>[] = [];
  let duplicate: string | undefined;
  visit(
    text,
    {
      onObjectBegin: () => {
        open.push(new Set());
      },
      onObjectProperty: (key, _offset, _length, _line, _column, parents) => {
        const keys = open.at(-1);
        if (duplicate !== undefined || keys === undefined) return;
        if (keys.has(key)) duplicate = formatPath([...parents(), key]);
        keys.add(key);
      },
      onObjectEnd: () => {
        open.pop();
      },
    },
    { disallowComments: true, allowTrailingComma: false },
  );
  return duplicate;
}

const formatPath = (path: JSONPath): string =>
  path
    .map((part, index) => (typeof part === "number" ? `[${part}]` : index === 0 ? part : `.${part}`))
    .join("");
