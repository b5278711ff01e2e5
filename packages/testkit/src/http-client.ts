// The load generators' HTTP client: node:http on a keep-alive agent with no socket limit. On this
// two-core machine the load generator shares the cores with the system it measures, and fetch
// (undici behind WHATWG streams and Headers) costs it 0.7 ms of CPU a request where this costs
// 0.29 ms (10,000 concurrent POSTs to a bare server, measured in decision 0050): every
// millisecond the generator spends is one the gateway and the services do not get.
import http from "node:http";

export interface HttpReply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

export interface HttpRequestOptions {
  method?: string;
  headers?: Record<string, string>;
  /** Sent as it is; a string is UTF-8. */
  body?: string;
  /** The request fails with this error after so long without an answer. */
  timeoutMs?: number;
}

const agent = new http.Agent({ keepAlive: true, maxSockets: Number.POSITIVE_INFINITY });

/** One request; resolves with its status and whole body, rejects on a connection error. */
export function httpRequest(url: string, options: HttpRequestOptions = {}): Promise<HttpReply> {
  const { method = "GET", body, timeoutMs } = options;
  const headers = { ...options.headers };
  if (body !== undefined) headers["content-length"] = String(Buffer.byteLength(body));
  return new Promise((resolve, reject) => {
    const request = http.request(url, { method, headers, agent, timeout: timeoutMs }, (response) => {
      response.setEncoding("utf8");
      let text = "";
      response.on("data", (chunk: string) => {
        text += chunk;
      });
      response.on("end", () =>
        resolve({ status: response.statusCode ?? 0, headers: response.headers, body: text }),
      );
      response.on("error", reject);
    });
    request.on("timeout", () => request.destroy(new Error(`no answer from ${url} within ${timeoutMs} ms`)));
    request.on("error", reject);
    request.end(body);
  });
}

/** POST of a JSON body with a bearer token, as the REST API's callers send it. */
export function postJson(url: string, token: string, value: unknown): Promise<HttpReply> {
  return httpRequest(url, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: JSON.stringify(value),
  });
}
