import { SnapblockError } from "../errors/index.js";

/** Shorthand for the common INVALID_ARGUMENT raised by request validation. */
export function invalidArgument(message: string): SnapblockError {
  return new SnapblockError("INVALID_ARGUMENT", message);
}

/** NOT_FOUND for a volume or snapshot id that names nothing (CSI spec: "does not exist"). */
export function notFound(kind: "volume" | "snapshot", id: string, field?: string): SnapblockError {
  return new SnapblockError(
    "NOT_FOUND",
    `${field ? `${field}: ` : ""}${kind} ${JSON.stringify(id)} does not exist`,
  );
}
