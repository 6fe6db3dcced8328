// Writes dist/proto: each proto/*.proto, and beside it <name>.json, the same definitions already
// parsed (protobufjs JSON), with the parse options pkg/rpc loads protos with (camelCase fields).
// Loading the JSON skips parsing the .proto text, which is most of what a short CLI call costs
// (csi.proto with google/protobuf/descriptor.proto takes ~150 ms to parse, its JSON ~50 ms to
// load). Run by `npm run build`; pkg/rpc uses the JSON when it sits next to the .proto it finds.
import { copyFileSync, mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import protobuf from "protobufjs";

// What @grpc/proto-loader adds before parsing: Google's well-known protos that protobufjs does
// not load by itself (csi.proto imports google/protobuf/descriptor.proto).
const require = createRequire(import.meta.url);
for (const name of ["api", "descriptor", "source_context", "type"]) {
  protobuf.common(name, require(`protobufjs/google/protobuf/${name}.json`).nested.google.nested.protobuf.nested);
}

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const outDir = path.resolve(root, process.argv[2] ?? "dist/proto");

/** The JSON of one proto file with its imports, parsed as @grpc/proto-loader would parse it. */
export function descriptorJson(file) {
  const parsed = new protobuf.Root();
  parsed.loadSync(file, { keepCase: false });
  parsed.resolveAll();
  return JSON.stringify(parsed.toJSON({ keepComments: false }));
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  mkdirSync(outDir, { recursive: true });
  for (const name of readdirSync(path.join(root, "proto")).filter((f) => f.endsWith(".proto"))) {
    const file = path.join(root, "proto", name);
    copyFileSync(file, path.join(outDir, name));
    writeFileSync(path.join(outDir, name.replace(/\.proto$/, ".json")), descriptorJson(file));
  }
}
