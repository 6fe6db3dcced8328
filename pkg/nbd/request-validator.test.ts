import { describe, expect, it } from "vitest";
import {
  NBD_CMD_BLOCK_STATUS,
  NBD_CMD_CACHE,
  NBD_CMD_DISC,
  NBD_CMD_FLAG_DF,
  NBD_CMD_FLAG_FAST_ZERO,
  NBD_CMD_FLAG_FUA,
  NBD_CMD_FLAG_NO_HOLE,
  NBD_CMD_FLAG_REQ_ONE,
  NBD_CMD_FLUSH,
  NBD_CMD_READ,
  NBD_CMD_TRIM,
  NBD_CMD_WRITE,
  NBD_CMD_WRITE_ZEROES,
  NBD_EINVAL,
  NBD_ENOSPC,
  NBD_EPERM,
} from "./constants.js";
import type { NbdRequest } from "./request-parser.js";
import { validateRequest, type RequestContext } from "./request-validator.js";

const context: RequestContext = {
  size: 1 << 20,
  readOnly: false,
  structuredReplies: true,
  metaContextSelected: true,
  minimumBlockSize: 1,
  maxPayloadBytes: 1 << 16,
};

function req(type: number, offset: number, length: number, flags = 0): NbdRequest {
  return { type, offset, length, flags, handle: Buffer.alloc(8) };
}

function errno(request: NbdRequest, overrides: Partial<RequestContext> = {}): number {
  const verdict = validateRequest(request, { ...context, ...overrides });
  return verdict.ok ? 0 : verdict.errno;
}

describe("validateRequest", () => {
  it("accepts well-formed requests, including zero lengths and FUA everywhere", () => {
    expect(errno(req(NBD_CMD_READ, 0, 1 << 16))).toBe(0);
    expect(errno(req(NBD_CMD_READ, (1 << 20) - 1, 1, NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_DF))).toBe(0);
    expect(errno(req(NBD_CMD_WRITE, 5, 0))).toBe(0);
    expect(errno(req(NBD_CMD_FLUSH, 123, 456, NBD_CMD_FLAG_FUA))).toBe(0);
    expect(errno(req(NBD_CMD_TRIM, 0, 1 << 20))).toBe(0);
    // Length limits apply to payloads only: trim and zeroes may cover the whole export.
    expect(errno(req(NBD_CMD_WRITE_ZEROES, 0, 1 << 20, NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FAST_ZERO))).toBe(
      0,
    );
    expect(errno(req(NBD_CMD_BLOCK_STATUS, 0, 1 << 20, NBD_CMD_FLAG_REQ_ONE))).toBe(0);
    expect(errno(req(NBD_CMD_CACHE, 0, 10))).toBe(0);
  });

  it("answers out-of-range requests as proto.md 'Error values' says", () => {
    const size = 1 << 20;
    expect(errno(req(NBD_CMD_READ, size, 1))).toBe(NBD_EINVAL);
    expect(errno(req(NBD_CMD_WRITE, size - 1, 2))).toBe(NBD_ENOSPC);
    expect(errno(req(NBD_CMD_WRITE_ZEROES, size, 1))).toBe(NBD_ENOSPC);
    expect(errno(req(NBD_CMD_TRIM, size, 1))).toBe(NBD_EINVAL);
    expect(errno(req(NBD_CMD_BLOCK_STATUS, size - 1, 2))).toBe(NBD_EINVAL);
    expect(errno(req(NBD_CMD_CACHE, size, 1))).toBe(NBD_EINVAL);
    expect(errno(req(NBD_CMD_READ, 2 ** 64 - 1, 1))).toBe(NBD_EINVAL);
  });

  it("refuses payloads above the maximum block size", () => {
    expect(errno(req(NBD_CMD_READ, 0, (1 << 16) + 1))).toBe(NBD_EINVAL);
    expect(errno(req(NBD_CMD_WRITE, 0, (1 << 16) + 1))).toBe(NBD_EINVAL);
  });

  it("refuses modifications of a read-only export with EPERM", () => {
    for (const type of [NBD_CMD_WRITE, NBD_CMD_TRIM, NBD_CMD_WRITE_ZEROES]) {
      expect(errno(req(type, 0, 10), { readOnly: true })).toBe(NBD_EPERM);
    }
    expect(errno(req(NBD_CMD_READ, 0, 10), { readOnly: true })).toBe(0);
    expect(errno(req(NBD_CMD_FLUSH, 0, 0), { readOnly: true })).toBe(0);
  });

  it("refuses unknown commands and flags that do not belong to the command", () => {
    expect(errno(req(99, 0, 0))).toBe(NBD_EINVAL);
    expect(errno(req(NBD_CMD_DISC, 0, 0))).toBe(NBD_EINVAL);
    expect(errno(req(NBD_CMD_READ, 0, 1, 1 << 7))).toBe(NBD_EINVAL);
    expect(errno(req(NBD_CMD_WRITE, 0, 1, NBD_CMD_FLAG_NO_HOLE))).toBe(NBD_EINVAL);
    expect(errno(req(NBD_CMD_TRIM, 0, 1, NBD_CMD_FLAG_FAST_ZERO))).toBe(NBD_EINVAL);
    expect(errno(req(NBD_CMD_READ, 0, 1, NBD_CMD_FLAG_REQ_ONE))).toBe(NBD_EINVAL);
    expect(errno(req(NBD_CMD_READ, 0, 1, NBD_CMD_FLAG_DF), { structuredReplies: false })).toBe(NBD_EINVAL);
  });

  it("requires a selected meta context and a nonzero length for BLOCK_STATUS", () => {
    expect(errno(req(NBD_CMD_BLOCK_STATUS, 0, 10), { metaContextSelected: false })).toBe(NBD_EINVAL);
    expect(errno(req(NBD_CMD_BLOCK_STATUS, 0, 0))).toBe(NBD_EINVAL);
  });

  it("enforces alignment to a 512-byte minimum block size", () => {
    const aligned = { minimumBlockSize: 512 };
    expect(errno(req(NBD_CMD_READ, 512, 1024), aligned)).toBe(0);
    expect(errno(req(NBD_CMD_READ, 1, 512), aligned)).toBe(NBD_EINVAL);
    expect(errno(req(NBD_CMD_WRITE, 512, 100), aligned)).toBe(NBD_EINVAL);
    expect(errno(req(NBD_CMD_TRIM, 100, 512), aligned)).toBe(NBD_EINVAL);
  });

  it("reads the size afresh: a grown export accepts what a smaller one refused", () => {
    expect(errno(req(NBD_CMD_WRITE, 1 << 20, 10))).toBe(NBD_ENOSPC);
    expect(errno(req(NBD_CMD_WRITE, 1 << 20, 10), { size: 2 << 20 })).toBe(0);
  });
});
