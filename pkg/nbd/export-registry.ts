import { resolve } from "node:path";
import { SnapblockError } from "../errors/index.js";
import type { NbdListenAddress } from "./listener.js";

/**
 * Names and addresses of exports, reserved before the (asynchronous) listener is opened so that
 * two concurrent starts of the same name or socket cannot both succeed.
 */
export class ExportRegistry<T> {
  private readonly byName = new Map<string, T | "starting">();
  private readonly addresses = new Map<string, string>();

  reserve(name: string, address: NbdListenAddress): void {
    if (this.byName.has(name))
      throw new SnapblockError("ALREADY_EXISTS", `an export named ${name} already exists`);
    const key = addressKey(address);
    const holder = key === undefined ? undefined : this.addresses.get(key);
    if (holder !== undefined) {
      throw new SnapblockError("ALREADY_EXISTS", `${describe(address)} is already used by export ${holder}`);
    }
    this.byName.set(name, "starting");
    if (key !== undefined) this.addresses.set(key, name);
  }

  /** Fills a reservation once the export is serving. */
  commit(name: string, value: T): void {
    this.byName.set(name, value);
  }

  /** Drops a name (failed start or completed stop) and its address. */
  release(name: string): void {
    this.byName.delete(name);
    for (const [key, holder] of this.addresses) if (holder === name) this.addresses.delete(key);
  }

  get(name: string): T | undefined {
    const value = this.byName.get(name);
    return value === "starting" ? undefined : value;
  }

  values(): T[] {
    return [...this.byName.values()].filter((value): value is T => value !== "starting");
  }
}

function addressKey(address: NbdListenAddress): string | undefined {
  if ("socketPath" in address) return `unix:${resolve(address.socketPath)}`;
  // TCP port 0 means "any free port": such requests never collide.
  return address.port === 0 ? undefined : `tcp:${address.host}:${address.port}`;
}

function describe(address: NbdListenAddress): string {
  return "socketPath" in address ? `socket ${address.socketPath}` : `${address.host}:${address.port}`;
}
