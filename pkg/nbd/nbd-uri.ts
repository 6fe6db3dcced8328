import type { NbdBoundAddress } from "./listener.js";

/**
 * The NBD URI of an export (NetworkBlockDevice/nbd doc/uri.md), as taken by nbdinfo, nbdcopy,
 * nbdfuse, qemu and fio: nbd+unix:///NAME?socket=PATH or nbd://HOST:PORT/NAME.
 */
export function exportUri(address: NbdBoundAddress, exportName: string): string {
  const name = encodeKeepingSlashes(exportName);
  if (address.kind === "unix")
    return `nbd+unix:///${name}?socket=${encodeKeepingSlashes(address.socketPath)}`;
  const host = address.host.includes(":") ? `[${address.host}]` : address.host;
  return `nbd://${host}:${address.port}/${name}`;
}

function encodeKeepingSlashes(text: string): string {
  return encodeURIComponent(text).replace(/%2F/gi, "/");
}
