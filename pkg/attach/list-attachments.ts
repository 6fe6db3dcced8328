import type { AttacherKind, Attachment } from "./attachment.js";
import type { AttachmentStateStore } from "./state-store.js";

/**
 * The attachments one attacher kind owns, as `find` reports them: every attacher keeps its records
 * in the same state directory, and each lists only its own kind.
 */
export async function listAttachments(
  store: AttachmentStateStore,
  kind: AttacherKind,
  find: (key: string) => Promise<Attachment | undefined>,
): Promise<Attachment[]> {
  const attachments: Attachment[] = [];
  for (const record of await store.list()) {
    if (record.kind !== kind) continue;
    const found = await find(record.key);
    if (found !== undefined) attachments.push(found);
  }
  return attachments;
}
