/**
 * Stands in for a node plugin process that attaches a volume and then exits (a restart): run as
 * `node --import tsx attach-child.ts STATE_DIR SOCKET KEY SIZE`, prints the attachment as JSON.
 */
import { NbdfuseLoopAttacher } from "../../pkg/attach/index.js";

const [stateDir, socketPath, key, size] = process.argv.slice(2);
if (stateDir === undefined || socketPath === undefined || key === undefined || size === undefined) {
  throw new Error("usage: attach-child.ts STATE_DIR SOCKET KEY SIZE");
}
const attacher = new NbdfuseLoopAttacher({ stateDir });
const attachment = await attacher.attach({
  key,
  socketPath,
  exportName: key,
  readOnly: false,
  sizeBytes: Number(size),
});
process.stdout.write(`${JSON.stringify(attachment)}\n`);
