/**
 * NBD URI of an export on a unix socket (NetworkBlockDevice/nbd doc/uri.md), the only way to give
 * nbdfuse an export name: nbd+unix:///EXPORT?socket=SOCKET. Both parts are percent-encoded except
 * for "/", which libnbd reads literally in both places.
 */
export function nbdUnixUri(socketPath: string, exportName: string): string {
  return `nbd+unix:///${encode(exportName)}?socket=${encode(socketPath)}`;
}

function encode(text: string): string {
  return encodeURIComponent(text).replace(/%2F/gi, "/");
}
