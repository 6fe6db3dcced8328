import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["pkg/**/*.test.ts", "cmd/**/*.test.ts", "test/**/*.test.ts"],
    // Tests that start processes, sockets and mounts need room; none is a timing assertion.
    testTimeout: 120_000,
    hookTimeout: 60_000,
    pool: "forks",
  },
});
