import { status } from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";
import { SnapblockError, type ErrorCode, StatusError } from "../errors/index.js";
import { toGrpcStatus } from "./grpc-status.js";

describe("the one error-to-status mapping", () => {
  it("maps every engine code to the CSI spec's status", () => {
    const expected: Record<ErrorCode, status> = {
      INVALID_ARGUMENT: status.INVALID_ARGUMENT,
      NOT_FOUND: status.NOT_FOUND,
      ALREADY_EXISTS: status.ALREADY_EXISTS,
      OUT_OF_RANGE: status.OUT_OF_RANGE,
      NO_SPACE: status.RESOURCE_EXHAUSTED,
      BUSY: status.FAILED_PRECONDITION,
      READ_ONLY: status.FAILED_PRECONDITION,
      CORRUPT: status.INTERNAL,
      CLOSED: status.UNAVAILABLE,
      CANCELLED: status.ABORTED,
      IO: status.INTERNAL,
      INTERNAL: status.INTERNAL,
    };
    for (const [code, grpc] of Object.entries(expected)) {
      const mapped = toGrpcStatus(new SnapblockError(code as ErrorCode, `a ${code} happened`));
      expect(mapped.code, code).toBe(grpc);
      expect(mapped.message).toBe(`a ${code} happened`);
      expect(mapped.unexpected).toBe(grpc === status.INTERNAL);
    }
  });

  it("maps the CSI-only outcomes, and hides unknown errors behind INTERNAL", () => {
    expect(toGrpcStatus(new StatusError("ABORTED", "busy")).code).toBe(status.ABORTED);
    expect(toGrpcStatus(new StatusError("UNIMPLEMENTED", "no")).code).toBe(status.UNIMPLEMENTED);
    expect(toGrpcStatus(new StatusError("FAILED_PRECONDITION", "stage first")).code).toBe(
      status.FAILED_PRECONDITION,
    );
    expect(toGrpcStatus(new StatusError("RESOURCE_EXHAUSTED", "topology")).code).toBe(
      status.RESOURCE_EXHAUSTED,
    );
    const unknown = toGrpcStatus(new TypeError("cannot read properties of undefined (secret=abc)"));
    expect(unknown).toMatchObject({ code: status.INTERNAL, unexpected: true });
    expect(unknown.message).not.toContain("secret");
  });
});
