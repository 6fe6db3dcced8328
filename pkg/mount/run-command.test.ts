import { describe, expect, it } from "vitest";
import { isSnapblockError } from "../errors/index.js";
import { CommandFailedError, describeCommand, findExecutable, runCommand } from "./run-command.js";

describe("runCommand", () => {
  it("returns output and accepted exit codes", async () => {
    const result = await runCommand({
      command: "sh",
      args: ["-c", "echo out; echo err >&2; exit 2"],
      acceptExitCodes: [2],
    });
    expect(result).toMatchObject({ exitCode: 2, stdout: "out\n", stderr: "err\n" });
  });

  it("says which command failed and why", async () => {
    const err: unknown = await runCommand({
      command: "sh",
      args: ["-c", "echo 'no such device' >&2; exit 3"],
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CommandFailedError);
    expect((err as Error).message).toBe(
      `sh -c "echo 'no such device' >&2; exit 3" failed with exit code 3: no such device`,
    );
    expect(isSnapblockError(err, "IO")).toBe(true);
  });

  it("keeps mount option values out of its messages (they may be secrets)", async () => {
    // The real mount(8), failing: the message names the options, never their values.
    const err: unknown = await runCommand({
      command: "mount",
      args: [
        "-t",
        "tmpfs",
        "-o",
        "password=hunter2-secret,size=1m,ro",
        "--",
        "none",
        "/nonexistent/snapblock",
      ],
    }).catch((e: unknown) => e);
    expect(isSnapblockError(err)).toBe(true);
    expect((err as Error).message).toContain("-o password=<redacted>,size=<redacted>,ro");
    expect((err as Error).message).not.toContain("hunter2");
    // A program that echoes its options on stderr: the value is blotted out of the output too.
    const echoed: unknown = await runCommand({
      command: "sh",
      args: ["-c", 'echo "helper: bad option $2" >&2; exit 32', "helper", "-o", "password=hunter2-secret,ro"],
    }).catch((e: unknown) => e);
    expect((echoed as Error).message).toMatch(/helper: bad option password=<redacted>,ro$/);
    expect((echoed as Error).message).not.toContain("hunter2");
  });

  it("kills a command that outlives its timeout", async () => {
    const started = Date.now();
    await expect(
      runCommand({ command: "sleep", args: ["10"], timeoutMs: 200, errorCode: "BUSY" }),
    ).rejects.toMatchObject({
      code: "BUSY",
      message: expect.stringMatching(/timed out after 200 ms/) as string,
    });
    expect(Date.now() - started).toBeLessThan(5000);
  });

  it("reports a missing program as INTERNAL", async () => {
    await expect(runCommand({ command: "snapblock-no-such-tool", args: [] })).rejects.toMatchObject({
      code: "INTERNAL",
      message: expect.stringMatching(/not installed/) as string,
    });
  });
});

describe("helpers", () => {
  it("quotes arguments that need it", () => {
    expect(describeCommand("mount", ["-o", "ro", "/a b"])).toBe('mount -o ro "/a b"');
  });

  it("shows mount option names and never their values", () => {
    expect(
      describeCommand("mount", ["-t", "cifs", "--options", "user=u,password=p w,ro", "--", "a", "b"]),
    ).toBe("mount -t cifs --options user=<redacted>,password=<redacted>,ro -- a b");
    // Only the argument after -o is an option list.
    expect(describeCommand("blkid", ["-o", "export", "/dev/x=y"])).toBe("blkid -o export /dev/x=y");
  });

  it("finds executables on PATH", async () => {
    expect(await findExecutable("sh")).toMatch(/\/sh$/);
    expect(await findExecutable("snapblock-no-such-tool")).toBeUndefined();
  });
});
