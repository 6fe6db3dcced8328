/**
 * Benchmarks measure the code production runs: JavaScript emitted by `tsc`, as `npm run build`
 * makes dist/ for the image. The TypeScript loader the tests use (tsx) transforms differently: it
 * keeps function names by wrapping every function and closure it creates in a helper that calls
 * Object.defineProperty, a cost per request on paths that make closures, which production code
 * never pays (BENCHMARKS.md, "Benchmarks run the compiled build").
 */
import { execFile } from "node:child_process";
import { existsSync, rmSync } from "node:fs";
import { mkdir, mkdtemp, rm, symlink } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);
const built = new Map<string, Promise<string>>();

/**
 * Compiles a checkout of snapblock (its tsconfig.json: cmd, pkg, bench) into a temporary
 * directory (removed when the process exits), once per checkout and process, and returns the
 * compiled bench/ directory. The checkout's node_modules is linked beside the output so its
 * packages resolve.
 */
export function compiledBench(checkout: string): Promise<string> {
  let done = built.get(checkout);
  if (done === undefined) {
    done = mkdtemp(join(tmpdir(), "snapblock-bench-build-")).then((out) => {
      process.once("exit", () => rmSync(out, { recursive: true, force: true }));
      return compile(checkout, out);
    });
    built.set(checkout, done);
  }
  return done;
}

/** Compiles `checkout` into `out` (made if missing); returns the compiled bench/ directory. */
export async function compile(checkout: string, out: string): Promise<string> {
  await mkdir(out, { recursive: true });
  const tsc = join(checkout, "node_modules", ".bin", "tsc");
  await run(tsc, ["-p", join(checkout, "tsconfig.json"), "--outDir", out, "--sourceMap", "false"], {
    maxBuffer: 16 << 20,
  }).catch((err: Error & { stdout?: string }) => {
    // tsc emits despite type errors (an older baseline may have some); only missing output fails.
    if (!existsSync(join(out, "bench")))
      throw new Error(`tsc failed for ${checkout}: ${err.stdout ?? err.message}`);
  });
  await rm(join(out, "node_modules"), { force: true });
  await symlink(join(checkout, "node_modules"), join(out, "node_modules"));
  return join(out, "bench");
}

// As a script (bench/nbd-bench.sh): `compiled.ts <checkout> <out>` compiles and prints the bench/ directory.
if (process.argv[1] !== undefined && import.meta.filename === process.argv[1]) {
  const [checkout, out] = process.argv.slice(2);
  if (checkout === undefined || out === undefined) throw new Error("usage: compiled.ts <checkout> <out-dir>");
  console.log(await compile(checkout, out));
}
