import { describe, expect, it } from "vitest";
import { PayloadBuffers } from "./payload-buffers.js";

describe("PayloadBuffers (reused buffers for large write payloads)", () => {
  it("needs no buffer for payloads a socket chunk holds", () => {
    const p = new PayloadBuffers(1 << 20, 64 * 1024);
    expect(p.take(4096)).toBeUndefined();
    expect(p.take(64 * 1024)).toBeUndefined();
  });

  it("hands out power-of-two buffers and reuses the ones given back", () => {
    const p = new PayloadBuffers(8 << 20, 64 * 1024);
    const a = p.take(300 * 1024)!;
    expect(a.length).toBe(512 * 1024);
    const b = p.take(1 << 20)!;
    expect(b.length).toBe(1 << 20);
    p.give(a);
    p.give(b);
    expect(p.idleBytes).toBe(1536 * 1024);
    // Same size class: the same memory again; another class: a new buffer.
    expect(p.take(400 * 1024)).toBe(a);
    expect(p.take(2 << 20)).not.toBe(b);
    expect(p.take(1 << 20)).toBe(b);
    expect(p.idleBytes).toBe(0);
  });

  it("keeps at most maxIdleBytes idle", () => {
    const p = new PayloadBuffers(2 << 20, 64 * 1024);
    const held = [1, 2, 3].map(() => p.take(1 << 20)!);
    for (const b of held) p.give(b);
    expect(p.idleBytes).toBe(2 << 20);
    const again = [p.take(1 << 20), p.take(1 << 20), p.take(1 << 20)];
    expect(again.filter((b) => held.includes(b!))).toHaveLength(2);
  });
});
