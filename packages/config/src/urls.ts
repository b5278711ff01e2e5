// Infrastructure URLs end up in tables, logs and error messages; a password in one must not.

/** The URL with its password replaced by `***`; unparseable input is not echoed at all. */
export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password !== "") parsed.password = "***";
    return parsed.toString();
  } catch {
    return "<unparseable URL>";
  }
}
