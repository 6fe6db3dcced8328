#!/bin/sh
# Builds snapblock-nbd-netlink next to its source (docs/node-attach.md, "Restarts"). Needs a C
# compiler and the Linux uapi headers (Debian: gcc, libc6-dev, which brings linux-libc-dev).
#   build.sh           build; fail if no compiler
#   build.sh --if-cc   build if a compiler is there, otherwise say so and succeed (npm run build on
#                      machines that only run the CLI; the kernel nbd path then uses nbd-client)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cc=${CC:-cc}
if ! command -v "$cc" >/dev/null 2>&1; then
  if [ "${1:-}" = "--if-cc" ]; then
    echo "native/nbd-netlink: no C compiler ($cc): not building snapblock-nbd-netlink (kernel nbd attaches then use nbd-client, which cannot reconnect after a data plane restart)" >&2
    exit 0
  fi
  echo "native/nbd-netlink: no C compiler ($cc); install gcc and libc6-dev" >&2
  exit 1
fi
out="$here/snapblock-nbd-netlink"
tmp="$out.tmp$$" # concurrent builds (test files run in parallel) each rename their own
"$cc" -std=c11 -O2 -Wall -Wextra -Werror -D_FORTIFY_SOURCE=2 -o "$tmp" "$here/snapblock-nbd-netlink.c"
mv -f "$tmp" "$out"
