// Pages by the URL's hash (#/rooms/<id>): the gateway serves one page at /console, so every
// link works on reload and the server needs no route per page.
import { useEffect, useState } from "preact/hooks";

export interface Route {
  /** "rooms", "pk", "campaigns", "orders", "operations", "sign-in". */
  page: string;
  /** The id after the page, when there is one. */
  id: string | undefined;
}

export function parseHash(hash: string): Route {
  const [page = "", id] = hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  return { page: page === "" ? "rooms" : page, id: id === "" ? undefined : id };
}

export const href = (page: string, id?: string) =>
  id === undefined ? `#/${page}` : `#/${page}/${encodeURIComponent(id)}`;

export function navigate(page: string, id?: string): void {
  location.hash = href(page, id);
}

export function useRoute(): Route {
  const [route, setRoute] = useState(() => parseHash(location.hash));
  useEffect(() => {
    const update = () => setRoute(parseHash(location.hash));
    addEventListener("hashchange", update);
    return () => removeEventListener("hashchange", update);
  }, []);
  return route;
}
