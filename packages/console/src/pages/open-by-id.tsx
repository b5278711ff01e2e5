// Opening a campaign or an order by id, for entities the API cannot list for an operator; the
// ones opened before in this browser are offered again (localStorage, ids and names only).
import { useState } from "preact/hooks";
import { href, navigate } from "../router.ts";

const recentMax = 10;
const storageKey = (page: string) => `ovation.console.recent.${page}`;

interface Recent {
  id: string;
  label: string;
}

function recentOf(page: string): Recent[] {
  try {
    const stored = JSON.parse(localStorage.getItem(storageKey(page)) ?? "[]");
    return Array.isArray(stored) ? stored.filter((entry) => typeof entry?.id === "string") : [];
  } catch {
    return [];
  }
}

export function remember(page: string, id: string, label: string): void {
  const kept = recentOf(page).filter((entry) => entry.id !== id);
  localStorage.setItem(storageKey(page), JSON.stringify([{ id, label }, ...kept].slice(0, recentMax)));
}

export function OpenById(props: {
  page: string;
  title: string;
  what: string;
  hint: string;
  children?: preact.ComponentChildren;
}) {
  const [id, setId] = useState("");
  const recent = recentOf(props.page);
  return (
    <section>
      <h1>{props.title}</h1>
      {props.children}
      <form
        onSubmit={(event) => {
          event.preventDefault();
          if (id.trim() !== "") navigate(props.page, id.trim());
        }}
      >
        <label>
          Open a {props.what} by id{" "}
          <input name="id" value={id} onInput={(e) => setId(e.currentTarget.value)} />
        </label>
        <button type="submit">Open</button>
        <p class="hint">{props.hint}</p>
      </form>
      {recent.length === 0 ? null : (
        <>
          <h2>Opened before</h2>
          <ul>
            {recent.map((entry) => (
              <li key={entry.id}>
                <a href={href(props.page, entry.id)}>{entry.label}</a>
              </li>
            ))}
          </ul>
        </>
      )}
    </section>
  );
}
