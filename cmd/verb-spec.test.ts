import { describe, expect, it } from "vitest";
import { HELP_FLAG, defineVerb, helpText, parseVerb } from "./verb-spec.js";

const create = defineVerb({
  command: "volume create",
  args: ["NAME"],
  summary: "a new volume",
  flags: {
    size: { type: "string", value: "SIZE", defaultText: "1G", help: "the volume's size" },
    fs: { type: "string", value: "TYPE", default: "ext4", help: "filesystem" },
    block: { type: "boolean", default: false, help: "a raw block device" },
    help: HELP_FLAG,
  },
});

const failure = (argv: string[]): string => {
  try {
    parseVerb(create, argv);
  } catch (err) {
    return (err as Error).message;
  }
  return "parsed";
};

describe("verb specs", () => {
  it("parses flags, defaults and positionals", () => {
    const { values, positionals, help } = parseVerb(create, ["data", "--size", "10G", "--block"]);
    expect({ values, positionals, help }).toEqual({
      values: { size: "10G", fs: "ext4", block: true, help: false },
      positionals: ["data"],
      help: false,
    });
  });

  it("takes --size -5G as a value, for the size check to refuse in a sentence", () => {
    expect(parseVerb(create, ["data", "--size", "-5G"]).values.size).toBe("-5G");
    expect(failure(["data", "--size", "-h"])).toMatch(/^--size needs a value\n/);
  });

  it("says what is wrong in a sentence, then the usage", () => {
    expect(failure([])).toBe(
      "snapblock volume create needs NAME\nusage: snapblock volume create NAME [options]\n(snapblock volume create --help for the options)",
    );
    expect(failure(["a", "b"])).toMatch(/^unexpected argument "b"\nusage: snapblock volume create NAME/);
    expect(failure(["a", "--sise", "1G"])).toMatch(/^unknown option --sise\n/);
    expect(failure(["a", "--size"])).toMatch(/^--size needs a value\n/);
    expect(failure(["a", "--block=yes"])).toMatch(/^--block takes no value\n/);
  });

  it("answers --help without checking the arguments", () => {
    expect(parseVerb(create, ["--help"]).help).toBe(true);
  });

  it("prints every flag with its default", () => {
    expect(helpText(create)).toBe(
      [
        "usage: snapblock volume create NAME [options]",
        "",
        "a new volume",
        "",
        "options:",
        "  --size SIZE  the volume's size (default 1G)",
        "  --fs TYPE    filesystem (default ext4)",
        "  --block      a raw block device",
        "  -h, --help   this help",
        "",
      ].join("\n"),
    );
  });
});
