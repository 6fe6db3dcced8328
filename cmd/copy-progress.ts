import type { OperatorConnection } from "./operator-connection.js";

/**
 * Follows a background full copy through ControllerGetVolume: the volume condition message has the
 * fixed form "full copy <state>: <copied>/<total> chunks (<percent>%)" (pkg/csi volume-view.ts).
 * Draws a bar on a terminal, one line per 10% otherwise. Resolves with the final state.
 */
const PROGRESS = /^full copy (running|done|cancelled|failed): (\d+)\/(\d+) chunks \((\d+)%\)/;

interface GetVolumeResponse {
  status?: { volumeCondition?: { abnormal: boolean; message: string } | null } | null;
}

export async function followCopy(
  conn: OperatorConnection,
  volumeId: string,
  options: { write: (text: string) => void; tty: boolean; intervalMs?: number },
): Promise<string> {
  let lastDecile = -1;
  for (;;) {
    const res = await conn.controller<GetVolumeResponse>("ControllerGetVolume", { volumeId });
    const message = res.status?.volumeCondition?.message ?? "";
    const match = PROGRESS.exec(message);
    if (!match) {
      options.write("no background copy for this volume\n");
      return "none";
    }
    const state = match[1]!;
    const percent = Number(match[4]);
    if (options.tty) {
      const width = 30;
      const filled = Math.round((percent / 100) * width);
      options.write(
        `\rfull copy [${"#".repeat(filled)}${".".repeat(width - filled)}] ${String(percent).padStart(3)}% (${match[2]}/${match[3]} chunks)`,
      );
    } else if (Math.floor(percent / 10) !== lastDecile) {
      lastDecile = Math.floor(percent / 10);
      options.write(`full copy ${percent}% (${match[2]}/${match[3]} chunks)\n`);
    }
    if (state !== "running") {
      if (options.tty) options.write("\n");
      if (state !== "done") options.write(`${message}\n`);
      return state;
    }
    await new Promise((resolve) => setTimeout(resolve, options.intervalMs ?? 250));
  }
}
