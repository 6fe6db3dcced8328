import {
  Metadata,
  credentials,
  status as GrpcCode,
  type Client,
  type ClientReadableStream,
  type ServiceError,
} from "@grpc/grpc-js";
import type { Attachment, FindOptions } from "../attach/index.js";
import type { EngineMeta } from "../engine-api/index.js";
import { SnapblockError } from "../errors/index.js";
import { fromEngineStatus } from "../engine-service/index.js";
import type { Logger } from "../log/index.js";
import type { DataPlaneInfo, DataPlaneVolume, NodeDataPlane, VolumeAttachmentFacts } from "../node/index.js";
import {
  fromWireAttachment,
  fromWireFacts,
  fromWireInfo,
  type WireAttachment,
  type WireFindAttachmentResponse,
  type WireGetInfoResponse,
  type WireGetVolumeResponse,
  type WireListAttachmentsResponse,
} from "./dataplane-messages.js";
import { loadDataPlaneProto } from "./dataplane-proto.js";

export interface DataPlaneClientOptions {
  /** The data plane's unix socket. */
  socketPath: string;
  logger: Logger;
  /** Deadline of one call (default 120 s: an attach starts nbdfuse and waits for its device). */
  callTimeoutMs?: number;
}

type Callback = (err: ServiceError | null, res?: unknown) => void;
type UnaryMethod = (req: unknown, md: Metadata, opts: { deadline: Date }, cb: Callback) => unknown;
type StreamMethod = (req: unknown, md: Metadata, opts: object) => ClientReadableStream<unknown>;

/**
 * NodeDataPlane over the data plane service (proto/dataplane.proto): what the CSI node plugin
 * uses when the data plane runs as its own process. Failures come back as the SnapblockErrors the
 * data plane raised; a data plane that does not answer is CLOSED (UNAVAILABLE), so the CO retries.
 */
export class DataPlaneClient implements NodeDataPlane {
  private readonly client: Client;

  constructor(private readonly options: DataPlaneClientOptions) {
    const { Client: Ctor } = loadDataPlaneProto();
    this.client = new Ctor(`unix:${options.socketPath}`, credentials.createInsecure());
  }

  async info(): Promise<DataPlaneInfo> {
    return fromWireInfo(await this.call<WireGetInfoResponse>("GetInfo", {}));
  }

  async getVolume(engineName: string): Promise<DataPlaneVolume | undefined> {
    const res = await this.call<WireGetVolumeResponse>("GetVolume", { engineName });
    return res.found ? { name: res.name, sizeBytes: res.sizeBytes, meta: res.meta } : undefined;
  }

  async updateVolumeMeta(engineName: string, patch: EngineMeta): Promise<void> {
    await this.call("UpdateVolumeMeta", { engineName, meta: patch });
  }

  async attach(o: { engineName: string; label: string }): Promise<Attachment> {
    return fromWireAttachment(await this.call<WireAttachment>("Attach", o));
  }

  async detach(engineName: string): Promise<void> {
    await this.call("Detach", { engineName });
  }

  async find(engineName: string, options?: FindOptions): Promise<Attachment | undefined> {
    const res = await this.call<WireFindAttachmentResponse>("FindAttachment", {
      engineName,
      probeIo: options?.probeIo === true,
    });
    return res.found && res.attachment ? fromWireAttachment(res.attachment) : undefined;
  }

  async attachments(): Promise<VolumeAttachmentFacts[]> {
    const res = await this.call<WireListAttachmentsResponse>("ListAttachments", {});
    return res.attachments.map(fromWireFacts);
  }

  async refreshSize(engineName: string): Promise<number> {
    return (await this.call<{ sizeBytes: number }>("RefreshSize", { engineName })).sizeBytes;
  }

  /** Opens a HoldVolume stream, runs fn once the data plane holds the volume, then cancels it. */
  async exclusive<T>(engineName: string, fn: () => Promise<T>): Promise<T> {
    const method = (this.client as unknown as Record<string, StreamMethod>)["HoldVolume"]!;
    const stream = method.call(this.client, { engineName }, new Metadata(), {});
    let done = false;
    const held = new Promise<void>((resolve, reject) => {
      stream.once("data", () => resolve());
      stream.on("error", (err: ServiceError) => {
        // Our own cancel at the end is how a hold ends; anything else is reported.
        if (done && err.code === GrpcCode.CANCELLED) return;
        if (!done) reject(this.fromStatus(err));
        else
          this.options.logger.warn("the data plane dropped a volume hold early", { volume: engineName, err });
      });
      stream.once("end", () => {
        if (!done)
          reject(
            new SnapblockError(
              "CLOSED",
              `the data plane ended the hold of volume ${engineName} before granting it; retry`,
            ),
          );
      });
    });
    try {
      await held;
      return await fn();
    } finally {
      done = true;
      stream.cancel();
    }
  }

  close(): void {
    this.client.close();
  }

  private call<Res>(method: string, request: object): Promise<Res> {
    const fn = (this.client as unknown as Record<string, UnaryMethod>)[method]!;
    const deadline = new Date(Date.now() + (this.options.callTimeoutMs ?? 120_000));
    return new Promise<Res>((resolve, reject) => {
      fn.call(this.client, request, new Metadata(), { deadline }, (err, res) => {
        if (err) reject(this.fromStatus(err));
        else resolve(res as Res);
      });
    });
  }

  private fromStatus(err: ServiceError): SnapblockError {
    if (err.metadata?.get("snapblock-error-code").length) return fromEngineStatus(err, this.peer());
    if (err.code === GrpcCode.UNAVAILABLE || err.code === GrpcCode.DEADLINE_EXCEEDED) {
      return new SnapblockError(
        "CLOSED",
        `the node's data plane (${this.options.socketPath}) does not answer: ${err.details || err.message}; is snapblock dataplane running on this node?`,
        { cause: err },
      );
    }
    return fromEngineStatus(err, this.peer());
  }

  private peer() {
    return { nodeId: "this node's data plane", address: this.options.socketPath };
  }
}
