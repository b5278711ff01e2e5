// The console: a navigation bar, the signed-in person, and the page the hash names. Pages
// that need a signed-in user (or an admin) say so instead of failing call by call.
import { render } from "preact";
import { CampaignsPage } from "./pages/campaigns.tsx";
import { OperationsPage } from "./pages/operations.tsx";
import { OrdersPage } from "./pages/orders.tsx";
import { PkPage } from "./pages/pk.tsx";
import { RoomPage } from "./pages/room.tsx";
import { RoomsPage } from "./pages/rooms.tsx";
import { SignInPage } from "./pages/sign-in.tsx";
import { href, type Route, useRoute } from "./router.ts";
import { isAdmin, type Session, signOut, useSession } from "./session.ts";
import "./style.css";

const navigation = [
  { page: "rooms", label: "Rooms" },
  { page: "pk", label: "PK" },
  { page: "campaigns", label: "Campaigns" },
  { page: "orders", label: "Orders" },
  { page: "operations", label: "Operations" },
] as const;

function App() {
  const route = useRoute();
  const { session } = useSession();
  return (
    <>
      <header>
        <strong class="brand">Ovation</strong>
        <nav>
          {navigation.map(({ page, label }) => (
            <a key={page} href={href(page)} class={route.page === page ? "current" : undefined}>
              {label}
            </a>
          ))}
        </nav>
        <span class="who">
          {session === undefined ? (
            <a href={href("sign-in")}>Sign in</a>
          ) : (
            <>
              <span data-testid="signed-in">
                {session.userId} ({session.roles.join(", ")})
              </span>{" "}
              <button type="button" onClick={signOut}>
                Sign out
              </button>
            </>
          )}
        </span>
      </header>
      <main>{page(route, session)}</main>
    </>
  );
}

function page(route: Route, session: Session | undefined) {
  if (route.page === "sign-in") return <SignInPage />;
  if (route.page === "rooms") return route.id === undefined ? <RoomsPage /> : <RoomPage roomId={route.id} />;
  // Everything else reads routes that need a caller.
  if (session === undefined) return <SignInPage reason="This page needs a signed-in user." />;
  switch (route.page) {
    case "pk":
      return <PkPage battleId={route.id} />;
    case "campaigns":
      return <CampaignsPage campaignId={route.id} />;
    case "orders":
      return <OrdersPage orderId={route.id} />;
    case "operations":
      return isAdmin(session) ? (
        <OperationsPage />
      ) : (
        <SignInPage reason="Operations need the admin role: sign in as an admin." />
      );
    default:
      return <p>No page {route.page} here.</p>;
  }
}

render(<App />, document.getElementById("app")!);
