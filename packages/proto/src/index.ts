// Generated code lives in ./gen; import specific files from "@ovation/proto/gen/...".
export {};
