import { invalidArgument } from "./request-errors.js";

/** Suffixes of Kubernetes resource quantities (binary and decimal), as byte multipliers. */
const SUFFIX: Record<string, number> = {
  "": 1,
  Ki: 2 ** 10,
  Mi: 2 ** 20,
  Gi: 2 ** 30,
  Ti: 2 ** 40,
  Pi: 2 ** 50,
  k: 1e3,
  M: 1e6,
  G: 1e9,
  T: 1e12,
  P: 1e15,
};

/**
 * A byte count written as a Kubernetes quantity ("10Gi", "500M", "1073741824"), as StorageClass
 * parameters are written next to `storage: 10Gi`. Whole bytes from 1 to 2^53; anything else is
 * INVALID_ARGUMENT naming the field.
 */
export function parseByteQuantity(text: string, field: string): number {
  const m = /^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?$/.exec(text.trim());
  const value = m ? Number(m[1]) * SUFFIX[m[2] ?? ""]! : NaN;
  if (!m || !Number.isSafeInteger(value) || value < 1) {
    throw invalidArgument(
      `${field} ${JSON.stringify(text)} is not a byte size: write a whole number of bytes or a quantity such as 500Mi or 10Gi`,
    );
  }
  return value;
}
