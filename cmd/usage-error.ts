/** A mistake on the command line: printed with the verb's usage, exit code 2. */
export class UsageError extends Error {
  override readonly name = "UsageError";
}
