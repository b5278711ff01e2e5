// Proves the one error model at its edge: a domain error becomes the Connect code of its kind
// with a google.rpc.ErrorInfo naming its domain and code, a retry hint becomes the gRPC retry
// pushback, a database failure maps like a domain error, and anything else is left alone (a
// bug, answered INTERNAL); a domain error thrown while a stream is read is mapped too.
import { Code, ConnectError, createClient, createRouterTransport } from "@connectrpc/connect";
import { DatabaseError } from "@ovation/db";
import { defineErrors, errorKinds, OverloadError } from "@ovation/errors";
import { Health } from "@ovation/proto/gen/grpc/health/v1/health_pb.ts";
import { describe, expect, it } from "vitest";
import { connectCodeOf, connectErrorOf, errorModelInterceptor, httpStatusOf, reasonOf } from "./errors.ts";
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

  it("maps a domain error a streaming handler throws after its first message", async () => {
    const transport = createRouterTransport(
      (router) =>
        router.service(Health, {
          check: () => ({}),
          list: () => ({}),
          async *watch() {
            yield {};
            throw new ShelfError("out_of_books", "no books left", { retryAfterMs: 2_000 });
          },
        }),
      { router: { interceptors: [errorModelInterceptor] } },
    );
    const received: unknown[] = [];
    const failure = await (async () => {
      for await (const message of createClient(Health, transport).watch({})) received.push(message);
    })().catch((error: unknown) => ConnectError.from(error));
    expect(received).toHaveLength(1);
    expect(failure).toBeInstanceOf(ConnectError);
    expect((failure as ConnectError).code).toBe(Code.FailedPrecondition);
    expect(reasonOf(failure as ConnectError)).toBe("out_of_books");
  });
});
