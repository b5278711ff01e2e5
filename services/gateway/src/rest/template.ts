// Path templates of google.api.http rules: the subset the gateway serves is literal segments
// and single-segment variables ("/api/rooms/{room_id}/end", "{id=*}" is the same). Multi-segment
// variables ("{name=shelves/*}", "**") and custom verbs (":cancel") are refused at start-up, so
// an annotation the gateway cannot serve fails loudly instead of routing wrongly.

export type Segment = { kind: "literal"; value: string } | { kind: "variable"; fieldPath: string };

export interface PathTemplate {
  /** The template as written in the proto. */
  source: string;
  segments: readonly Segment[];
}

export class TemplateError extends Error {
  override name = "TemplateError";
}

const literalPattern = /^[A-Za-z0-9._~-]+$/;
const variablePattern = /^\{([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)(?:=\*)?\}$/;

export function parseTemplate(source: string): PathTemplate {
  if (!source.startsWith("/")) throw new TemplateError(`path template ${source} must start with "/"`);
  const seen = new Set<string>();
  const segments = source
    .slice(1)
    .split("/")
    .map((part): Segment => {
      const variable = variablePattern.exec(part);
      if (variable !== null) {
        const fieldPath = variable[1]!;
        if (seen.has(fieldPath)) throw new TemplateError(`path template ${source} binds ${fieldPath} twice`);
        seen.add(fieldPath);
        return { kind: "variable", fieldPath };
      }
      if (literalPattern.test(part)) return { kind: "literal", value: part };
      throw new TemplateError(
        `path template ${source}: segment "${part}" is not supported (literal or {field} segments only)`,
      );
    });
  return { source, segments };
}

/**
 * Binds the decoded path segments of a request to the template's variables, or returns
 * undefined when the path does not fit. A variable never matches an empty segment.
 */
export function matchTemplate(
  template: PathTemplate,
  segments: readonly string[],
): Map<string, string> | undefined {
  if (segments.length !== template.segments.length) return undefined;
  const bound = new Map<string, string>();
  for (const [index, segment] of template.segments.entries()) {
    const value = segments[index]!;
    if (segment.kind === "literal") {
      if (segment.value !== value) return undefined;
    } else {
      if (value === "") return undefined;
      bound.set(segment.fieldPath, value);
    }
  }
  return bound;
}

/**
 * Orders templates so the more specific one wins: at the first position where they differ in
 * kind, a literal beats a variable ("/rooms/live" before "/rooms/{room_id}").
 */
export function compareSpecificity(a: PathTemplate, b: PathTemplate): number {
  const length = Math.min(a.segments.length, b.segments.length);
  for (let index = 0; index < length; index++) {
    const kindA = a.segments[index]!.kind;
    const kindB = b.segments[index]!.kind;
    if (kindA !== kindB) return kindA === "literal" ? -1 : 1;
  }
  return 0;
}

/** "/api/rooms/{room_id}" with variables renamed, for example to their JSON names for OpenAPI. */
export function formatTemplate(template: PathTemplate, rename: (fieldPath: string) => string): string {
  const parts = template.segments.map((segment) =>
    segment.kind === "literal" ? segment.value : `{${rename(segment.fieldPath)}}`,
  );
  return `/${parts.join("/")}`;
}

/**
 * Splits a request path into decoded segments; undefined when a segment is not valid
 * percent-encoding. "%2F" stays inside its segment.
 */
export function splitPath(pathname: string): string[] | undefined {
  if (!pathname.startsWith("/")) return undefined;
  try {
    return pathname.slice(1).split("/").map(decodeURIComponent);
  } catch {
    return undefined;
  }
}
