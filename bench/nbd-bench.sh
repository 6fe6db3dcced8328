#!/usr/bin/env bash
# nbd-bench.sh -- `npm run bench:nbd`: snapblock's NBD server beside its peers, in one run.
#
# 1. The peers table of the team's peers.sh, when PEERS names it (raw file, qemu-nbd raw and qcow2, nbdkit file and
#    memory, and qemu-nbd through the nbdfuse + loop kernel path) with snapblock added as the
#    custom target: the same fio nbd-engine workloads over a unix socket.
# 2. snapblock through the kernel path this machine has: nbdfuse -> loop device -> fio libaio.
# 3. The first-write-after-snapshot penalty: 4 KiB writes, one per 64 KiB chunk (fio rw=write:60k),
#    over the same 1 GiB region, in steady state and then just after each of ROUNDS snapshots
#    (each round rewrites the blocks the round before left in chunks a new snapshot shares), QD1
#    and QD16, for snapblock and for qcow2 through qemu-nbd (internal snapshot, 64 KiB clusters).
# 4. Server CPU per I/O (bench/nbd-cpu.ts, `npm run bench:nbd-cpu`): snapblock beside qemu-nbd and
#    nbdkit in both cache modes (cache=none and writeback / page cache), fio's nbd engine, rounds
#    interleaved, with throughput, CPU per op or MiB and page faults; its own Markdown table.
#    The raw file (fio libaio O_DIRECT, no server) runs in the same rounds: snapblock / raw there
#    is the interleaved, repeated form of section 1's ratio.
# Output: "<target> <figure> <value>" lines (peers.sh's format) and a Markdown summary.
# Env: PEERS (path to a peers.sh; unset: section 1 is skipped, section 4 measures the same peers), SIZE (4G),
#      RUNTIME (s, 4), BENCH_DIR (default $TMPDIR/snapblock-nbd-bench), ROUNDS (3),
#      SECTIONS (which of "peers kpath penalty cpu" to run; default all). Needs root (loop, FUSE).
#      Each penalty round keeps 1 GiB of chunks for its snapshot and the pool is 3x SIZE: with
#      ROUNDS=3 (six snapshots over both QDs) SIZE must be at least 4G.
set -u
export LC_ALL=C
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
PEERS=${PEERS:-}
SIZE=${SIZE:-4G}
RUNTIME=${RUNTIME:-4}
ROUNDS=${ROUNDS:-3}
SECTIONS=${SECTIONS:-peers kpath penalty cpu}
section() { case " $SECTIONS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
BENCH_DIR=${BENCH_DIR:-${TMPDIR:-/tmp}/snapblock-nbd-bench}
BYTES=$(numfmt --from=iec "$SIZE")
SB_DIR=$BENCH_DIR/snapblock
SB_SOCK=$BENCH_DIR/snapblock.sock
SB_URI="nbd+unix:///bench?socket=$SB_SOCK"
SBPID=""; FUSEPID=""; LOOP=""; QPID=""
OUT=$BENCH_DIR/results.txt

cleanup() {
  [ -n "$LOOP" ] && losetup -d "$LOOP" 2>/dev/null
  if [ -n "$FUSEPID" ]; then umount "$BENCH_DIR/mnt" 2>/dev/null; kill "$FUSEPID" 2>/dev/null; wait "$FUSEPID" 2>/dev/null; fi
  [ -n "$QPID" ] && kill "$QPID" 2>/dev/null
  if [ -n "$SBPID" ]; then kill -TERM "$SBPID" 2>/dev/null; wait "$SBPID" 2>/dev/null; fi
  rm -rf "$SB_DIR" "$BENCH_DIR/build" "$BENCH_DIR/pen.qcow2" "$BENCH_DIR/pen.raw" "$SB_SOCK" "$BENCH_DIR/q.sock"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$BENCH_DIR/mnt"
rm -rf "$SB_DIR" "$SB_SOCK"
: > "$OUT"

# The server runs as production runs: the tsc build, not the tests' TypeScript loader (bench/compiled.ts).
BUILT=$(node --import tsx "$HERE/compiled.ts" "$REPO" "$BENCH_DIR/build") || { echo "build failed" >&2; exit 1; }
start_snapblock() {
  coproc SB { exec node "$BUILT/nbd-server.js" "$SB_DIR" "$SB_SOCK" "$BYTES"; }
  SBPID=$SB_PID
  read -r line <&"${SB[0]}" && [ "$line" = ready ] || { echo "snapblock server did not start" >&2; exit 1; }
}
snapblock_snapshot() {
  kill -USR1 "$SBPID"
  read -r line <&"${SB[0]}"
  case $line in snapshot*) echo "# $line" | tee -a "$OUT" ;; *) echo "snapshot failed: $line" >&2; exit 1 ;; esac
}

echo "# snapblock server: $SIZE volume, 64 KiB chunks, filled before measuring" | tee -a "$OUT"
start_snapblock

# ---------------------------------------------------------------- 1. peers table + snapblock
if ! section peers; then
  :
elif [ -n "$PEERS" ] && [ -f "$PEERS" ]; then
  CUSTOM_URI=$SB_URI KPATH=1 SIZE=$SIZE RUNTIME=$RUNTIME BENCH_DIR=$BENCH_DIR/peers bash "$PEERS" \
    | sed 's/^custom /snapblock /' | tee -a "$OUT"
else
  echo "# peers table skipped: set PEERS to a peers.sh (section 4 runs the same peers interleaved)" | tee -a "$OUT"
fi

# ---------------------------------------------------------------- 2. snapblock kernel path
if section kpath; then
nbdfuse "$BENCH_DIR/mnt/disk" --unix "$SB_SOCK" >/dev/null 2>&1 &
FUSEPID=$!
for i in $(seq 50); do [ -f "$BENCH_DIR/mnt/disk" ] && break; sleep 0.1; done
LOOP=$(losetup -f --show --direct-io=on "$BENCH_DIR/mnt/disk")
for w in seqwrite:write:1M:4 seqread:read:1M:4 randwrite_qd1:randwrite:4k:1 randwrite_qd16:randwrite:4k:16 randread_qd1:randread:4k:1 randread_qd16:randread:4k:16; do
  IFS=: read -r name rw bs qd <<< "$w"
  extra=""; case $rw in *write) extra="--end_fsync=1";; esac
  line=$(fio --name="$name" --ioengine=libaio --direct=1 --filename="$LOOP" --rw="$rw" --bs="$bs" --iodepth="$qd" \
         --runtime="$RUNTIME" --ramp_time=1 --time_based $extra --output-format=terse --terse-version=3 2>/dev/null | grep '^3;' | head -1)
  case $rw in *write) bw=$(cut -d';' -f48 <<< "$line"); iops=$(cut -d';' -f49 <<< "$line") ;;
              *) bw=$(cut -d';' -f7 <<< "$line"); iops=$(cut -d';' -f8 <<< "$line") ;; esac
  if [ "$bs" = 1M ]; then echo "snapblock-kpath ${name}_MiBps $(awk -v b="$bw" 'BEGIN{printf "%.0f", b/1024}')"
  else echo "snapblock-kpath ${name}_IOPS $(awk -v i="$iops" 'BEGIN{printf "%.0f", i}')"; fi | tee -a "$OUT"
done
losetup -d "$LOOP"; LOOP=""
umount "$BENCH_DIR/mnt"; kill "$FUSEPID" 2>/dev/null; wait "$FUSEPID" 2>/dev/null; FUSEPID=""
fi

# ---------------------------------------------------------------- 3. first write after a snapshot
# One 4 KiB write per 64 KiB chunk over 1 GiB (16,384 writes), ending with a flush.
penalty_run() { # uri qd label
  local line
  line=$(fio --name=pen --ioengine=nbd --uri="$1" --rw=write:60k --bs=4k --size=1G --iodepth="$2" \
         --end_fsync=1 --output-format=terse --terse-version=3 2>/dev/null | grep '^3;' | head -1)
  echo "$3 $(cut -d';' -f49 <<< "$line")"
}
if section penalty; then
for qd in 1 16; do
  penalty_run "$SB_URI" $qd "snapblock penalty_steady_qd${qd}_IOPS" | tee -a "$OUT"
  for r in $(seq "$ROUNDS"); do
    snapblock_snapshot
    penalty_run "$SB_URI" $qd "snapblock penalty_after_snapshot${r}_qd${qd}_IOPS" | tee -a "$OUT"
  done
done

QSOCK=$BENCH_DIR/q.sock
QURI="nbd+unix:///?socket=$QSOCK"
fio --name=fill --filename="$BENCH_DIR/pen.raw" --size=1G --rw=write --bs=1M --ioengine=libaio --direct=1 --output=/dev/null
qemu-img convert -q -f raw -O qcow2 "$BENCH_DIR/pen.raw" "$BENCH_DIR/pen.qcow2"
rm -f "$BENCH_DIR/pen.raw"
start_qemu() {
  qemu-nbd -k "$QSOCK" -f qcow2 --cache=none --aio=native -t -e 8 "$BENCH_DIR/pen.qcow2" &
  QPID=$!
  for i in $(seq 100); do [ -S "$QSOCK" ] && return 0; sleep 0.1; done
}
stop_qemu() { kill "$QPID"; wait "$QPID" 2>/dev/null; QPID=""; rm -f "$QSOCK"; }
n=0
for qd in 1 16; do
  start_qemu; penalty_run "$QURI" $qd "qemu-nbd-qcow2 penalty_steady_qd${qd}_IOPS" | tee -a "$OUT"; stop_qemu
  for r in $(seq "$ROUNDS"); do
    n=$((n + 1)); qemu-img snapshot -c "s$n" "$BENCH_DIR/pen.qcow2"
    start_qemu; penalty_run "$QURI" $qd "qemu-nbd-qcow2 penalty_after_snapshot${r}_qd${qd}_IOPS" | tee -a "$OUT"; stop_qemu
  done
done
fi

# ---------------------------------------------------------------- summary
echo
echo "## Summary (ratios)"
awk -v rounds="$ROUNDS" '
  $1 !~ /^#/ && NF == 3 { v[$1" "$2] = $3; t[$1] = 1; w[$2] = 1 }
  END {
    n = split("seqwrite_MiBps seqread_MiBps randwrite_qd1_IOPS randwrite_qd16_IOPS randread_qd1_IOPS randread_qd16_IOPS", ws, " ")
    print "| workload | raw | qemu-nbd raw | qemu-nbd qcow2 | nbdkit file | snapblock | snapblock / qcow2 | snapblock / raw | kpath qemu-nbd | kpath snapblock |"
    print "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for (i = 1; i <= n; i++) { k = ws[i]
      s = v["snapblock " k]; q = v["qemu-nbd-qcow2 " k]; r = v["raw " k]
      printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", k, r, v["qemu-nbd-raw " k], q, v["nbdkit-file " k], s,
        (q > 0 ? sprintf("%.2fx", s / q) : "-"), (r > 0 ? sprintf("%.2fx", s / r) : "-"), v["kpath " k], v["snapblock-kpath " k]
    }
    print ""
    print "| first write after a snapshot | steady IOPS | after-snapshot IOPS | penalty |"
    print "|---|---:|---:|---:|"
    split("snapblock qemu-nbd-qcow2", ts, " ")
    for (j = 1; j <= 2; j++) for (qd = 1; qd <= 16; qd += 15) for (r = 1; r <= rounds; r++) {
      a = v[ts[j] " penalty_steady_qd" qd "_IOPS"]; b = v[ts[j] " penalty_after_snapshot" r "_qd" qd "_IOPS"]
      printf "| %s QD%d, snapshot %d | %s | %s | %s |\n", ts[j], qd, r, a, b, (b > 0 ? sprintf("%.2fx", a / b) : "-")
    }
  }' "$OUT"

# ---------------------------------------------------------------- 4. CPU per I/O, both cache modes
if section cpu; then
  echo
  echo "## Server CPU per I/O, peers in both cache modes, and the raw file in the same rounds"
  (cd "$REPO" && RUNTIME=$RUNTIME BENCH_DIR="$BENCH_DIR/cpu" \
    TARGETS=raw,snapblock,qemu-nbd-none,qemu-nbd-writeback,nbdkit-file,nbdkit-file-none \
    node --import tsx "$HERE/nbd-cpu.ts")
  rm -rf "$BENCH_DIR/cpu"
fi
