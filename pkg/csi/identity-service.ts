import type { UntypedServiceImplementation } from "@grpc/grpc-js";
import { invalidArgument } from "./request-errors.js";
import type { GetPluginCapabilitiesResponse } from "./generated/csi/v1/GetPluginCapabilitiesResponse.js";
import type { GetPluginInfoResponse } from "./generated/csi/v1/GetPluginInfoResponse.js";
import type { ProbeResponse } from "./generated/csi/v1/ProbeResponse.js";
import type { Logger } from "../log/index.js";
import { unary, type CallObserver } from "../rpc/index.js";

export const DEFAULT_PLUGIN_NAME = "csi.snapblock.dev";

export interface IdentityOptions {
  /** CSI driver name (default csi.snapblock.dev). */
  pluginName?: string;
  /** The plugin's version, from package.json (cmd/ reads it). */
  vendorVersion: string;
  /**
   * Whether this process serves the Controller and GroupController services (advertised as
   * CONTROLLER_SERVICE and GROUP_CONTROLLER_SERVICE).
   */
  controller: boolean;
  /** Whether this process serves the SnapshotMetadata service (SNAPSHOT_METADATA_SERVICE). */
  snapshotMetadata?: boolean;
  /** Probe readiness: true once the pool is open. */
  ready: () => boolean;
  logger: Logger;
  /** Metrics hooks, called for every RPC. */
  observer?: CallObserver;
}

/**
 * CSI spec, GetPluginInfo: the name "MUST follow domain name notation format ... MUST be 63
 * characters or less, beginning and ending with an alphanumeric character ([a-z0-9A-Z]) with
 * dashes (-), dots (.), and alphanumerics between".
 */
const PLUGIN_NAME = /^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,61}[A-Za-z0-9])?$/;

export function validatePluginName(name: string): string {
  if (!PLUGIN_NAME.test(name)) {
    throw invalidArgument(
      `plugin name ${JSON.stringify(name)} is invalid: up to 63 letters, digits, '-' and '.', starting and ending with a letter or digit`,
    );
  }
  return name;
}

export function identityHandlers(options: IdentityOptions): UntypedServiceImplementation {
  const name = validatePluginName(options.pluginName ?? DEFAULT_PLUGIN_NAME);
  const log = { logger: options.logger, observer: options.observer, quiet: true };
  return {
    GetPluginInfo: unary("GetPluginInfo", log, (): Promise<GetPluginInfoResponse> =>
      Promise.resolve({ name, vendorVersion: options.vendorVersion, manifest: {} }),
    ),
    GetPluginCapabilities: unary("GetPluginCapabilities", log, (): Promise<GetPluginCapabilitiesResponse> => {
      const capabilities: GetPluginCapabilitiesResponse["capabilities"] = [
        // Volumes live on one node's disk: the CO must respect their topology.
        { service: { type: "VOLUME_ACCESSIBILITY_CONSTRAINTS" } },
        // Volumes grow while in use: ControllerExpandVolume resizes, NodeExpandVolume grows the filesystem.
        { volumeExpansion: { type: "ONLINE" } },
      ];
      if (options.controller) {
        // The controller serves group snapshots too (CSI spec: GROUP_CONTROLLER_SERVICE).
        capabilities.unshift(
          { service: { type: "CONTROLLER_SERVICE" } },
          { service: { type: "GROUP_CONTROLLER_SERVICE" } },
        );
      }
      // Changed-block tracking: the CO (external-snapshot-metadata) calls SnapshotMetadata only
      // when this is advertised (CSI spec, PluginCapability.Service).
      if (options.snapshotMetadata) capabilities.push({ service: { type: "SNAPSHOT_METADATA_SERVICE" } });
      return Promise.resolve({ capabilities });
    }),
    // CSI spec, Probe: "still initializing, but is otherwise perfectly healthy" is a successful
    // response with ready = false; the CO waits before calling the other services.
    Probe: unary("Probe", log, (): Promise<ProbeResponse> =>
      Promise.resolve({ ready: { value: options.ready() } }),
    ),
  };
}
