/**
 * Option haggling against the real server on a real unix socket, with the hand-written client
 * (proto.md "Handshake", "Option types", "Option reply types").
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { serveMemory, sleep, type TestExport } from "./harness.js";
import {
  encodeInfoRequest,
  encodeMetaContextRequest,
  INFO,
  OPT,
  RawNbdClient,
  REP,
  TFLAG,
} from "./raw-client.js";

describe("NBD handshake", () => {
  let t: TestExport;
  const clients: RawNbdClient[] = [];
  const connect = async (): Promise<RawNbdClient> => {
    const client = await RawNbdClient.connect(t.socketPath);
    clients.push(client);
    return client;
  };

  beforeAll(async () => {
    t = await serveMemory({
      exportOptions: { description: "a test volume" },
      limits: { maxOptionBytes: 8192 },
    });
  });
  afterAll(async () => {
    for (const client of clients) client.destroy();
    await t.cleanup();
  });

  it("greets with fixed newstyle and no-zeroes only", async () => {
    const client = await connect();
    const { handshakeFlags } = await client.handshake();
    expect(handshakeFlags).toBe(0b11);
  });

  it("answers an unknown option with ERR_UNSUP and still accepts GO afterwards", async () => {
    const client = await connect();
    await client.handshake();
    const unknown = await client.option(0x4242, Buffer.from("whatever payload"));
    expect(unknown).toHaveLength(1);
    expect(unknown[0]?.type).toBe(REP.ERR_UNSUP);
    expect(unknown[0]?.option).toBe(0x4242);
    const tls = await client.option(OPT.STARTTLS);
    expect(tls[0]?.type).toBe(REP.ERR_UNSUP);
    const details = await client.info(OPT.GO, "vol", [INFO.NAME, INFO.DESCRIPTION, INFO.BLOCK_SIZE]);
    expect(details.size).toBe(64 * 1024 * 1024);
    const byType = new Map(details.infos.map((r) => [r.data.readUInt16BE(0), r.data]));
    expect(byType.get(INFO.NAME)?.subarray(2).toString()).toBe("vol");
    expect(byType.get(INFO.DESCRIPTION)?.subarray(2).toString()).toBe("a test volume");
    const blockSize = byType.get(INFO.BLOCK_SIZE);
    expect(blockSize?.length).toBe(14);
    expect([blockSize?.readUInt32BE(2), blockSize?.readUInt32BE(6), blockSize?.readUInt32BE(10)]).toEqual([
      1,
      65536,
      32 * 1024 * 1024,
    ]);
    // Without NBD_OPT_STRUCTURED_REPLY: no DF; read-write: trim, zeroes, fast zero; multi-conn.
    expect(details.flags & TFLAG.SEND_DF).toBe(0);
    expect(details.flags).toBe(
      TFLAG.HAS_FLAGS |
        TFLAG.SEND_FLUSH |
        TFLAG.SEND_FUA |
        TFLAG.SEND_TRIM |
        TFLAG.SEND_WRITE_ZEROES |
        TFLAG.SEND_FAST_ZERO |
        TFLAG.CAN_MULTI_CONN,
    );
  });

  it("lists the export, rejects LIST with data, and INFO does not end the handshake", async () => {
    const client = await connect();
    await client.handshake();
    const list = await client.option(OPT.LIST);
    expect(list.map((r) => r.type)).toEqual([REP.SERVER, REP.ACK]);
    const server = list[0]!.data;
    const nameLength = server.readUInt32BE(0);
    expect(server.subarray(4, 4 + nameLength).toString()).toBe("vol");
    expect(server.subarray(4 + nameLength).toString()).toBe("a test volume");
    expect((await client.option(OPT.LIST, Buffer.from([1])))[0]?.type).toBe(REP.ERR_INVALID);
    const info = await client.info(OPT.INFO, "");
    expect(info.size).toBe(64 * 1024 * 1024);
    await expect(client.info(OPT.INFO, "no-such-export")).rejects.toMatchObject({
      replyType: REP.ERR_UNKNOWN,
    });
    const go = await client.info(OPT.GO, "");
    expect(go.flags).toBe(info.flags);
  });

  it("rejects malformed INFO/GO data with ERR_INVALID and keeps the session", async () => {
    const client = await connect();
    await client.handshake();
    const good = encodeInfoRequest("vol", [INFO.NAME]);
    const nameTooLong = Buffer.from(good);
    nameTooLong.writeUInt32BE(0xffffffff, 0);
    const cases = [
      Buffer.alloc(3), // shorter than 6
      nameTooLong,
      Buffer.concat([good, Buffer.from([0])]), // trailing byte
      encodeInfoRequest("v\u0000l", []), // NUL in name
      Buffer.concat([Buffer.from([0, 0, 0, 2, 0xc3, 0x28]), Buffer.from([0, 0])]), // invalid UTF-8
    ];
    for (const data of cases) {
      const replies = await client.option(OPT.GO, data);
      expect(replies).toHaveLength(1);
      expect(replies[0]?.type).toBe(REP.ERR_INVALID);
      expect(replies[0]?.data.length).toBeGreaterThan(0);
    }
    await client.info(OPT.GO, "vol");
  });

  it("negotiates meta contexts only after structured replies, and only base:allocation", async () => {
    const client = await connect();
    await client.handshake();
    expect((await client.setMetaContext("vol", ["base:allocation"]))[0]?.type).toBe(REP.ERR_INVALID);
    expect((await client.structuredReply()).map((r) => r.type)).toEqual([REP.ACK]);

    const listAll = await client.option(OPT.LIST_META_CONTEXT, encodeMetaContextRequest("vol", []));
    expect(listAll.map((r) => r.type)).toEqual([REP.META_CONTEXT, REP.ACK]);
    expect(listAll[0]?.data.subarray(4).toString()).toBe("base:allocation");
    const listBase = await client.option(OPT.LIST_META_CONTEXT, encodeMetaContextRequest("vol", ["base:"]));
    expect(listBase.map((r) => r.type)).toEqual([REP.META_CONTEXT, REP.ACK]);
    const listOther = await client.option(
      OPT.LIST_META_CONTEXT,
      encodeMetaContextRequest("vol", ["qemu:dirty-bitmap:x", "base:nonsense"]),
    );
    expect(listOther.map((r) => r.type)).toEqual([REP.ACK]);

    // SET with "base:" alone selects nothing (proto.md: it MUST be ignored during SET).
    expect((await client.setMetaContext("vol", ["base:"])).map((r) => r.type)).toEqual([REP.ACK]);
    const set = await client.setMetaContext("vol", ["x-foo:bar", "base:allocation"]);
    expect(set.map((r) => r.type)).toEqual([REP.META_CONTEXT, REP.ACK]);
    expect(set[0]?.data.readUInt32BE(0)).not.toBe(0);
    expect(set[0]?.data.subarray(4).toString()).toBe("base:allocation");

    // A query length pointing past the option data is syntactically invalid.
    const bad = encodeMetaContextRequest("vol", ["base:allocation"]);
    bad.writeUInt32BE(1000, 11);
    expect((await client.option(OPT.SET_META_CONTEXT, bad))[0]?.type).toBe(REP.ERR_INVALID);
    expect((await client.setMetaContext("nope", ["base:allocation"]))[0]?.type).toBe(REP.ERR_UNKNOWN);
    const go = await client.info(OPT.GO, "vol");
    expect(go.flags & TFLAG.SEND_DF).toBe(TFLAG.SEND_DF);
  });

  it("answers NBD_OPT_EXPORT_NAME with size, flags and 124 zeroes unless NO_ZEROES", async () => {
    for (const clientFlags of [1, 3]) {
      const client = await connect();
      await client.handshake(clientFlags);
      client.sendOption(OPT.EXPORT_NAME, Buffer.from("vol"));
      const reply = await client.read(10);
      expect(Number(reply.readBigUInt64BE(0))).toBe(64 * 1024 * 1024);
      if (clientFlags === 1) expect((await client.read(124)).every((b) => b === 0)).toBe(true);
      // Transmission works right after: a flush.
      const flush = await client.send({ type: 3, offset: 0, length: 0 });
      expect(flush.error).toBe(0);
      await client.disconnect();
    }
  });

  it("hard-disconnects on an unknown EXPORT_NAME, bad client flags and a bad option magic", async () => {
    const unknown = await connect();
    await unknown.handshake();
    unknown.sendOption(OPT.EXPORT_NAME, Buffer.from("missing"));
    expect(await unknown.closesWithin(2000)).toBe(true);

    const flags = await connect();
    await flags.handshake(0x80);
    expect(await flags.closesWithin(2000)).toBe(true);

    const magic = await connect();
    await magic.handshake();
    magic.write(Buffer.alloc(16, 0x41));
    expect(await magic.closesWithin(2000)).toBe(true);
  });

  it("refuses an over-long option with ERR_TOO_BIG after skipping its data", async () => {
    const client = await connect();
    await client.handshake();
    client.sendOption(0x7777, Buffer.alloc(100_000, 0x55));
    const reply = await client.readOptionReply();
    expect(reply.type).toBe(REP.ERR_TOO_BIG);
    await client.info(OPT.GO, "vol");
  });

  it("acknowledges NBD_OPT_ABORT and closes", async () => {
    const client = await connect();
    await client.handshake();
    const replies = await client.option(OPT.ABORT);
    expect(replies.map((r) => r.type)).toEqual([REP.ACK]);
    expect(await client.closesWithin(2000)).toBe(true);
  });
});

describe("NBD handshake limits", () => {
  it("closes a client that does not finish the handshake in time", async () => {
    const t = await serveMemory({ limits: { handshakeTimeoutMs: 200 } });
    try {
      const client = await RawNbdClient.connect(t.socketPath);
      await client.handshake();
      expect(await client.closesWithin(3000)).toBe(true);
      expect(t.server.stats().protocolErrors.handshake_timeout).toBe(1);
    } finally {
      await t.cleanup();
    }
  });

  it("closes a client that sends too many options", async () => {
    const t = await serveMemory({ limits: { maxOptionsPerConnection: 5 } });
    try {
      const client = await RawNbdClient.connect(t.socketPath);
      await client.handshake();
      for (let i = 0; i < 5; i += 1) expect((await client.option(99))[0]?.type).toBe(REP.ERR_UNSUP);
      client.sendOption(99);
      expect(await client.closesWithin(2000)).toBe(true);
    } finally {
      await t.cleanup();
    }
  });

  it("refuses connections beyond the per-export limit", async () => {
    const t = await serveMemory({ limits: { maxConnectionsPerExport: 2 } });
    try {
      const a = await RawNbdClient.open(t.socketPath);
      const b = await RawNbdClient.open(t.socketPath);
      const c = await RawNbdClient.connect(t.socketPath);
      expect(await c.closesWithin(2000)).toBe(true);
      await a.client.disconnect();
      await sleep(50);
      const d = await RawNbdClient.open(t.socketPath);
      expect(d.details.size).toBe(64 * 1024 * 1024);
      await Promise.all([b.client.disconnect(), d.client.disconnect()]);
    } finally {
      await t.cleanup();
    }
  });
});
