// Proves the one error model at its edge: a domain error becomes the Connect code of its kind
// with a google.rpc.ErrorInfo naming its domain and code, a retry hint becomes the gRPC retry
// pushback, a database failure maps like a domain error, and anything else is left alone (a
// bug, answered INTERNAL).
import { Code, ConnectError } from "@connectrpc/connect";
import { DatabaseError } from "@ovation/db";
import { defineErrors, errorKinds, OverloadError } from "@ovation/errors";
import { describe, expect, it } from "vitest";
import { connectCodeOf, connectErrorOf, httpStatusOf, reasonOf } from "./errors.ts";
import { retryPushbackHeader } from "./transport-errors.ts";

const ShelfError = defineErrors("shelf", { out_of_books: "failed_precondition", shelf_unknown: "not_found" });

describe("the error model on the wire", () => {
  it("maps a domain error to its kind's code, with its code, domain and details as ErrorInfo", () => {
    const mapped = connectErrorOf(
      new ShelfError("out_of_books", "no books left", { details: { shelf: "a" } }),
    )!;
    expect(mapped.code).toBe(Code.FailedPrecondition);
    expect(mapped.rawMessage).toBe("no books left");
    expect(reasonOf(mapped)).toBe("out_of_books");
    expect(httpStatusOf(mapped.code)).toBe(412);
    expect(connectErrorOf(new ShelfError("shelf_unknown", "?"))?.code).toBe(Code.NotFound);
  });

  it("tells a caller that is shed when to come back", () => {
    const mapped = connectErrorOf(new OverloadError("overloaded", "busy", { retryAfterMs: 1_500 }))!;
    expect(mapped.code).toBe(Code.Unavailable);
    expect(mapped.metadata.get(retryPushbackHeader)).toBe("1500");
  });

  it("maps database failures like any domain's, and leaves bugs and ConnectErrors alone", () => {
    expect(connectErrorOf(new DatabaseError("unique_violation", "already exists"))?.code).toBe(
      Code.AlreadyExists,
    );
    const bug = new TypeError("undefined is not a function");
    expect(connectErrorOf(bug)).toBeUndefined();
    const passed = new ConnectError("x", Code.Aborted);
    expect(connectErrorOf(passed)).toBe(passed);
  });

  it("knows a Connect code for every kind and refuses codes that are not snake case", () => {
    for (const kind of errorKinds) expect(connectCodeOf(kind), kind).toBeDefined();
    expect(() => defineErrors("bad", { NotSnake: "not_found" })).toThrow(/snake case/);
  });
});
