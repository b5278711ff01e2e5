// gRPC server reflection (grpc.reflection.v1 and v1alpha), so `buf curl` and grpcurl work
// without a local copy of the schema. No npm package provides it for Connect (connect-es
// issue #507), and the protocol is small: answer each request with FileDescriptorProto bytes
// of the file that holds a symbol, plus every file it depends on.
import {
  create,
  createRegistry,
  type DescFile,
  fromBinary,
  type Registry,
  toBinary,
} from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import type { ConnectRouter } from "@connectrpc/connect";
import * as v1 from "@ovation/proto/gen/grpc/reflection/v1/reflection_pb.ts";
import * as v1alpha from "@ovation/proto/gen/grpc/reflection/v1alpha/reflection_pb.ts";

/** gRPC status codes used in reflection error responses. */
const grpcStatus = { notFound: 5, unimplemented: 12 } as const;

type Request = v1.ServerReflectionRequest;
type Response = v1.ServerReflectionResponse;

export function registerReflection(
  router: ConnectRouter,
  files: readonly DescFile[],
  serviceNames: string[],
) {
  const all = withDependencies(
    ...files,
    v1.file_grpc_reflection_v1_reflection,
    v1alpha.file_grpc_reflection_v1alpha_reflection,
  );
  const registry: Schema = {
    types: createRegistry(...all),
    files: new Map(all.map((f) => [f.proto.name, f])),
  };
  const names = [...serviceNames, v1.ServerReflection.typeName, v1alpha.ServerReflection.typeName];
  const answer = (request: Request) => respond(registry, names, request);
  router.service(v1.ServerReflection, {
    async *serverReflectionInfo(requests) {
      for await (const request of requests) yield answer(request);
    },
  });
  // v1alpha has the same messages under another package; convert through the binary form.
  router.service(v1alpha.ServerReflection, {
    async *serverReflectionInfo(requests) {
      for await (const request of requests) {
        const converted = fromBinary(
          v1.ServerReflectionRequestSchema,
          toBinary(v1alpha.ServerReflectionRequestSchema, request),
        );
        const response = answer(converted);
        yield fromBinary(
          v1alpha.ServerReflectionResponseSchema,
          toBinary(v1.ServerReflectionResponseSchema, response),
        );
      }
    },
  });
}

interface Schema {
  types: Registry;
  files: ReadonlyMap<string, DescFile>;
}

function respond(registry: Schema, serviceNames: string[], request: Request): Response {
  const base = { validHost: request.host, originalRequest: request };
  const files = (file: DescFile | undefined): Response =>
    file === undefined
      ? error(base, grpcStatus.notFound, "not found")
      : create(v1.ServerReflectionResponseSchema, {
          ...base,
          messageResponse: {
            case: "fileDescriptorResponse",
            value: {
              fileDescriptorProto: withDependencies(file).map((f) =>
                toBinary(FileDescriptorProtoSchema, f.proto),
              ),
            },
          },
        });
  const message = request.messageRequest;
  switch (message.case) {
    case "listServices":
      return create(v1.ServerReflectionResponseSchema, {
        ...base,
        messageResponse: {
          case: "listServicesResponse",
          value: { service: serviceNames.map((name) => ({ name })) },
        },
      });
    case "fileByFilename":
      return files(registry.files.get(message.value));
    case "fileContainingSymbol":
      return files(fileOfSymbol(registry, message.value));
    case "fileContainingExtension": {
      const target = registry.types.getMessage(message.value.containingType);
      const extension = target && registry.types.getExtensionFor(target, message.value.extensionNumber);
      return files(extension?.file);
    }
    case "allExtensionNumbersOfType":
      return error(base, grpcStatus.unimplemented, "extension listing is not supported");
    default:
      return error(base, grpcStatus.unimplemented, "unsupported reflection request");
  }
}

function error(base: object, code: number, text: string): Response {
  return create(v1.ServerReflectionResponseSchema, {
    ...base,
    messageResponse: { case: "errorResponse", value: { errorCode: code, errorMessage: text } },
  });
}

/** The file defining `symbol`: a message, enum, service, method, field or extension name. */
function fileOfSymbol(registry: Schema, symbol: string): DescFile | undefined {
  const found = registry.types.get(symbol);
  if (found !== undefined && "file" in found) return found.file;
  const parent = symbol.slice(0, symbol.lastIndexOf("."));
  const owner = registry.types.get(parent);
  if (owner !== undefined && "file" in owner) return owner.file;
  return undefined;
}

function withDependencies(...files: DescFile[]): DescFile[] {
  const seen = new Map<string, DescFile>();
  const visit = (f: DescFile) => {
    if (seen.has(f.proto.name)) return;
    seen.set(f.proto.name, f);
    for (const dependency of f.dependencies) visit(dependency);
  };
  for (const file of files) visit(file);
  return [...seen.values()];
}
