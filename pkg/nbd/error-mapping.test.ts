import { describe, expect, it } from "vitest";
import { SnapblockError, type ErrorCode } from "../errors/index.js";
import { NBD_EINVAL, NBD_EIO, NBD_ENOSPC, NBD_EPERM } from "./constants.js";
import { mapBackendError } from "./error-mapping.js";
import type { Logger } from "../log/index.js";

function capture(): { logger: Logger; errors: Array<Record<string, unknown> | undefined> } {
  const errors: Array<Record<string, unknown> | undefined> = [];
  const noop = (): void => undefined;
  return { logger: { debug: noop, info: noop, warn: noop, error: (_m, f) => errors.push(f) }, errors };
}

describe("mapBackendError", () => {
  const expected: Array<[ErrorCode, number]> = [
    ["NO_SPACE", NBD_ENOSPC],
    ["OUT_OF_RANGE", NBD_EINVAL],
    ["INVALID_ARGUMENT", NBD_EINVAL],
    ["READ_ONLY", NBD_EPERM],
    ["NOT_FOUND", NBD_EIO],
    ["BUSY", NBD_EIO],
    ["CORRUPT", NBD_EIO],
    ["CLOSED", NBD_EIO],
    ["CANCELLED", NBD_EIO],
    ["IO", NBD_EIO],
    ["INTERNAL", NBD_EIO],
    ["ALREADY_EXISTS", NBD_EIO],
  ];

  it.each(expected)("maps %s to errno %i", (code, errno) => {
    const { logger, errors } = capture();
    const reply = mapBackendError(new SnapblockError(code, `failure ${code}`), {
      logger,
      exportName: "vol",
      command: "write",
      offset: 0,
      length: 1,
    });
    expect(reply.errno).toBe(errno);
    expect(reply.message).toContain(`failure ${code}`);
    // Whatever becomes EIO is logged: the client only ever sees the number.
    expect(errors.length).toBe(errno === NBD_EIO ? 1 : 0);
  });

  it("maps foreign errors and non-errors to EIO and logs them", () => {
    const { logger, errors } = capture();
    const context = { logger, exportName: "vol", command: "read", offset: 5, length: 6 };
    expect(mapBackendError(new TypeError("boom"), context)).toEqual({
      errno: NBD_EIO,
      message: "I/O error: boom",
    });
    expect(mapBackendError("a string", context).errno).toBe(NBD_EIO);
    expect(errors).toHaveLength(2);
    expect(errors[0]).toMatchObject({ export: "vol", command: "read", offset: 5, length: 6 });
  });
});
