import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fromJSON, loadSync } from "@grpc/proto-loader";
import { afterAll, describe, expect, it } from "vitest";
import { PROTO_LOADER_OPTIONS } from "../../pkg/rpc/index.js";

const ROOT = path.resolve(import.meta.dirname, "../..");
const out = mkdtempSync(path.join(tmpdir(), "sb-descriptors-"));
afterAll(() => rmSync(out, { recursive: true, force: true }));

/** A package definition as data: the descriptors, without the serializer functions. */
const asData = (def: object) =>
  JSON.parse(
    JSON.stringify(def, (key, value: unknown) =>
      key === "fileDescriptorProtos" ? undefined : typeof value === "function" ? "fn" : value,
    ),
  ) as unknown;

describe("the parsed protos of a build (proto/build-descriptors.js)", () => {
  it("define exactly what parsing the .proto files defines", () => {
    execFileSync(process.execPath, [path.join(ROOT, "proto/build-descriptors.js"), out]);
    const protos = readdirSync(path.join(ROOT, "proto")).filter((f) => f.endsWith(".proto"));
    expect(protos.sort()).toEqual(["csi.proto", "dataplane.proto", "engine.proto", "operator.proto"]);
    for (const name of protos) {
      const parsed = loadSync(path.join(ROOT, "proto", name), PROTO_LOADER_OPTIONS);
      const built = fromJSON(
        JSON.parse(readFileSync(path.join(out, name.replace(/\.proto$/, ".json")), "utf8")) as Parameters<
          typeof fromJSON
        >[0],
        PROTO_LOADER_OPTIONS,
      );
      expect(Object.keys(built).sort(), name).toEqual(Object.keys(parsed).sort());
      expect(asData(built), name).toEqual(asData(parsed));
      expect(readFileSync(path.join(out, name), "utf8")).toBe(
        readFileSync(path.join(ROOT, "proto", name), "utf8"),
      );
    }
  });
});
