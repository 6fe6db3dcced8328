import { SnapblockError } from "../errors/index.js";
import type { LabelSelector } from "./kube-api.js";

const OPERATORS = new Set(["In", "NotIn", "Exists", "DoesNotExist"]);

/**
 * Checks a label selector as the API server would (metav1.LabelSelector): known operators, values
 * for In/NotIn and none for Exists/DoesNotExist. Returns a message for a person, or undefined.
 */
export function selectorProblem(selector: unknown): string | undefined {
  if (selector === null || typeof selector !== "object") return "selector must be an object";
  const s = selector as LabelSelector;
  if (s.matchLabels !== undefined) {
    if (typeof s.matchLabels !== "object" || s.matchLabels === null)
      return "selector.matchLabels must be a map";
    for (const [k, v] of Object.entries(s.matchLabels))
      if (typeof v !== "string") return `selector.matchLabels["${k}"] must be a string`;
  }
  for (const [i, e] of (s.matchExpressions ?? []).entries()) {
    if (!e || typeof e.key !== "string" || e.key === "")
      return `selector.matchExpressions[${i}].key is required`;
    if (!OPERATORS.has(e.operator))
      return `selector.matchExpressions[${i}].operator ${JSON.stringify(e.operator)} is not In, NotIn, Exists or DoesNotExist`;
    const values = e.values ?? [];
    if ((e.operator === "In" || e.operator === "NotIn") && values.length === 0)
      return `selector.matchExpressions[${i}] (${e.operator}) needs values`;
    if ((e.operator === "Exists" || e.operator === "DoesNotExist") && values.length > 0)
      return `selector.matchExpressions[${i}] (${e.operator}) takes no values`;
  }
  return undefined;
}

/** The selector as the API's labelSelector query string ("app=db,tier in (a,b),!legacy"). */
export function selectorString(selector: LabelSelector): string {
  const problem = selectorProblem(selector);
  if (problem) throw new SnapblockError("INVALID_ARGUMENT", problem);
  const parts = Object.entries(selector.matchLabels ?? {}).map(([k, v]) => `${k}=${v}`);
  for (const e of selector.matchExpressions ?? []) {
    const values = (e.values ?? []).join(",");
    if (e.operator === "In") parts.push(`${e.key} in (${values})`);
    else if (e.operator === "NotIn") parts.push(`${e.key} notin (${values})`);
    else if (e.operator === "Exists") parts.push(e.key);
    else parts.push(`!${e.key}`);
  }
  return parts.join(",");
}

/** Whether `labels` satisfy the selector (what the API server does with selectorString). */
export function matchesSelector(labels: Record<string, string>, selector: LabelSelector): boolean {
  for (const [k, v] of Object.entries(selector.matchLabels ?? {})) if (labels[k] !== v) return false;
  for (const e of selector.matchExpressions ?? []) {
    const has = Object.hasOwn(labels, e.key);
    const value = labels[e.key];
    const values = e.values ?? [];
    if (e.operator === "In" && !(has && values.includes(value!))) return false;
    if (e.operator === "NotIn" && has && values.includes(value!)) return false;
    if (e.operator === "Exists" && !has) return false;
    if (e.operator === "DoesNotExist" && has) return false;
  }
  return true;
}
