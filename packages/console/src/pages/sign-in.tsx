// Sign-in: a dev token from the gateway where it mints them (local infrastructure), or a token
// pasted from an identity provider. Either way the console keeps only the token.
import { useEffect, useState } from "preact/hooks";
import { describeError } from "../live.ts";
import { devTokensOffered, type Role, signIn, signInWithDevToken } from "../session.ts";

const roleChoices: Role[] = ["user", "host", "admin"];

export function SignInPage({ reason }: { reason?: string }) {
  const [offered, setOffered] = useState<boolean | undefined>(undefined);
  const [userId, setUserId] = useState("root");
  const [roles, setRoles] = useState<Role[]>(["user", "admin"]);
  const [pasted, setPasted] = useState("");
  const [error, setError] = useState<string | undefined>(undefined);

  useEffect(() => {
    devTokensOffered()
      .then(setOffered)
      .catch(() => setOffered(false));
  }, []);

  const attempt = async (act: () => Promise<unknown>) => {
    setError(undefined);
    try {
      await act();
      if (location.hash === "#/sign-in") location.hash = "#/rooms";
    } catch (failure) {
      setError(describeError(failure));
    }
  };

  return (
    <section class="sign-in">
      <h1>Sign in</h1>
      {reason === undefined ? null : <p class="notice">{reason}</p>}
      {offered ? (
        <form
          onSubmit={(event) => {
            event.preventDefault();
            void attempt(() => signInWithDevToken(userId, roles));
          }}
        >
          <h2>Dev token</h2>
          <p>This gateway mints tokens for anyone (OVATION_DEV_TOKENS): local infrastructure only.</p>
          <label>
            User id <input name="userId" value={userId} onInput={(e) => setUserId(e.currentTarget.value)} />
          </label>
          {roleChoices.map((role) => (
            <label key={role} class="inline">
              <input
                type="checkbox"
                checked={roles.includes(role)}
                onChange={(e) =>
                  setRoles(e.currentTarget.checked ? [...roles, role] : roles.filter((one) => one !== role))
                }
              />
              {role}
            </label>
          ))}
          <button type="submit">Get a dev token</button>
        </form>
      ) : offered === false ? (
        <p>This gateway mints no dev tokens: paste a token from your identity provider.</p>
      ) : null}
      <form
        onSubmit={(event) => {
          event.preventDefault();
          void attempt(async () => signIn(pasted));
        }}
      >
        <h2>Paste a token</h2>
        <textarea name="token" rows={4} value={pasted} onInput={(e) => setPasted(e.currentTarget.value)} />
        <button type="submit">Use this token</button>
      </form>
      {error === undefined ? null : <p class="error">{error}</p>}
    </section>
  );
}
