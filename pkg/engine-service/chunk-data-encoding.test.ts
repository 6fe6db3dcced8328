import { describe, expect, it } from "vitest";
import { allocWithHeadroom, encodeWithHeadroom, HEADER_ROOM, withHeadroom } from "./chunk-data-encoding.js";
import { loadEngineProto } from "./engine-proto.js";
import type { WireChunkData } from "./engine-messages.js";

describe("ChunkData encoded in place", () => {
  const method = loadEngineProto().service.ReadChunks!;
  const decode = (b: Buffer) => method.responseDeserialize(b) as WireChunkData;

  it("is the protobuf encoding of the message: it decodes to the same fields as the usual encoder's", () => {
    for (const chunk of [0, 1, 127, 128, 16_383, 16_384, 2 ** 31 - 1, 2 ** 32 - 1])
      for (const count of [1, 16, 300])
        for (const length of [1, 127, 128, 65_536, 1 << 20]) {
          const buffer = allocWithHeadroom(length);
          buffer.fill(0xee, 0, HEADER_ROOM); // whatever was in the room must not show
          for (let i = 0; i < length; i += 4093) buffer[HEADER_ROOM + i] = (chunk + i) & 0xff;
          const message = withHeadroom(chunk, count, buffer);
          const encoded = encodeWithHeadroom(message)!;
          expect(encoded.buffer).toBe(buffer.buffer); // no copy of the data
          const decoded = decode(encoded);
          expect(decoded.chunk).toBe(chunk);
          expect(decoded.count).toBe(count);
          expect(decoded.hole).toBe(false);
          expect(decoded.data.equals(buffer.subarray(HEADER_ROOM))).toBe(true);
          const usual = decode(method.responseSerialize(message));
          expect([usual.chunk, usual.count, usual.hole]).toEqual([chunk, count, false]);
          expect(usual.data.equals(decoded.data)).toBe(true);
        }
  });

  it("leaves every other message to the usual encoder", () => {
    const plain: WireChunkData = { chunk: 3, data: Buffer.from("abc"), hole: false, count: 1 };
    expect(encodeWithHeadroom(plain)).toBeUndefined();
    expect(decode(method.responseSerialize(plain))).toMatchObject({ chunk: 3, count: 1, hole: false });
    const hole: WireChunkData = { chunk: 7, data: Buffer.alloc(0), hole: true, count: 4 };
    expect(encodeWithHeadroom(hole)).toBeUndefined();
    expect(decode(method.responseSerialize(hole))).toMatchObject({ chunk: 7, count: 4, hole: true });
  });
});
