#!/usr/bin/env bash
# TaskRush's benchmarks, by hand (never from CI: timings on shared machines
# are noise for a test suite). One command:
#
#   benches/run.sh            # everything below, tables to stdout and $BENCH_DIR/*.md
#   benches/run.sh peers      # only: peers (make, ninja, just, Task, turbo, TaskRush 0.2) + taskrush, W1..W6
#   benches/run.sh extras     # only: cold start, --no-daemon, memory
#   benches/run.sh plugins    # only: plugin hook cost (benches/plugin_overhead.py)
#   benches/run.sh enforcement  # only: the sandbox's cost on plugin start and warm hooks (benches/plugin_enforcement.py)
#   benches/run.sh hostile    # only: hostile clients (benches/hostile.py)
#   benches/run.sh outputs    # only: restoring outputs beside re-running, turbo, nx (benches/outputs_restore.py)
#
# The peer harness in benches/harness/ is the team's shared one: it
# installs the peers (apt: hyperfine make; pip: ninja rust-just go-task-bin;
# npm: turbo; cargo: taskrush 0.2.6), generates the workloads and times
# every runner with hyperfine. Env: RUNS (default 10), BENCH_DIR.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
export BENCH_DIR=${BENCH_DIR:-${TMPDIR:-/tmp}/taskrush-bench}
export RUNS=${RUNS:-10}
# TASKRUSH_BIN_DIR: time binaries built elsewhere (skips the build).
BIN=${TASKRUSH_BIN_DIR:-$ROOT/target/release}
T=$BIN/taskrush
export TASKRUSH_SOCKET=$BENCH_DIR/daemon/taskrushd.sock
WL=$BENCH_DIR/workloads
steps=("$@"); [ ${#steps[@]} -eq 0 ] && steps=(peers extras plugins hostile)

[ -n "${TASKRUSH_BIN_DIR:-}" ] || (cd "$ROOT" && cargo build --release --bins --quiet)
command -v hyperfine >/dev/null || bash "$HERE/harness/peers.sh" install
[ -d "$WL/w1" ] || bash "$HERE/harness/peers.sh" gen

machine() {
  echo "date: $(date -u +%Y-%m-%dT%H:%MZ); machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -sr)"
  echo "taskrush: $("$T" --version)"
}

peers() {
  "$T" daemon stop >/dev/null 2>&1 || true
  # (the harness returns non-zero after its last workload: a `[ w = w5 ] && …` test)
  TASKRUSH=$T TASKRUSH_PRE="cd $WL/w1 && $T noop >/dev/null" bash "$HERE/harness/peers.sh" run || true
  bash "$HERE/harness/peers.sh" table | tee "$BENCH_DIR/peers.md"
}

extras() {
  local out=$BENCH_DIR/extras.json
  echo "## W1 cold (no daemon running; the CLI starts it) and --no-daemon"
  local task; task=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/task
  (cd "$WL/w1" && hyperfine -N --warmup 2 --runs "$RUNS" --export-markdown "$BENCH_DIR/w1-cold.md" \
     --prepare "$T daemon stop" -n "taskrush (cold: starts the daemon)" "$T noop" \
     -n "taskrush --no-daemon" "$T --no-daemon noop" \
     -n "task" "$task noop" >/dev/null; cat "$BENCH_DIR/w1-cold.md")
  echo
  echo "## --no-daemon against the warm daemon, every workload"
  "$T" daemon stop >/dev/null 2>&1 || true
  (cd "$WL/w1" && "$T" noop >/dev/null)
  (cd "$WL/w4" && "$T" build >/dev/null)
  : > "$BENCH_DIR/no-daemon.md"
  for w in "w1 noop" "w2 t99" "w3 -j all" "w4 build" "w5 out" "w6 --list"; do
    set -- $w; local d=$1; shift
    (cd "$WL/$d" && hyperfine -N --warmup 1 --runs "$RUNS" --export-markdown "$BENCH_DIR/.nd.md" \
       -n "$d warm daemon" "$T $*" -n "$d --no-daemon" "$T --no-daemon $*" >/dev/null 2>&1)
    tail -n 2 "$BENCH_DIR/.nd.md" >> "$BENCH_DIR/no-daemon.md"
  done
  (echo "| Command | Mean [ms] | Min [ms] | Max [ms] | Relative |"; echo "|:---|---:|---:|---:|---:|"; cat "$BENCH_DIR/no-daemon.md")
  echo
  echo "## Memory"
  local cli daemon_idle daemon_busy
  cli=$(cd "$WL/w1" && /usr/bin/time -f %M "$T" noop 2>&1 >/dev/null | tail -1)
  "$T" daemon stop >/dev/null 2>&1 || true
  (cd "$WL/w1" && "$T" noop >/dev/null)
  daemon_idle=$("$T" daemon status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["rss_bytes"]//1024)')
  for w in "w2 t99" "w3 -j all" "w4 build" "w6 --list"; do set -- $w; (cd "$WL/$1" && shift && "$T" "$@" >/dev/null); done
  daemon_busy=$("$T" daemon status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["rss_bytes"]//1024)')
  echo "| what | peak / resident |"
  echo "|---|---|"
  echo "| CLI, W1 (peak RSS, GNU time) | $((cli / 1024)).$(( (cli % 1024) * 10 / 1024 )) MiB |"
  echo "| daemon after one W1 run | $((daemon_idle / 1024)).$(( (daemon_idle % 1024) * 10 / 1024 )) MiB |"
  echo "| daemon after W1..W6 (10,000-task file and 10,000 file hashes loaded) | $((daemon_busy / 1024)).$(( (daemon_busy % 1024) * 10 / 1024 )) MiB |"
  "$T" daemon stop >/dev/null 2>&1 || true
}

plugins() {
  if command -v go >/dev/null; then
    (cd "$HERE/plugins/noop-go" && GOPROXY=off GOTOOLCHAIN=local go build -o noop-go .)
  fi
  python3 "$HERE/plugin_overhead.py" --pairs 2000 --tasks 300 --runs 5 --taskrush "$T"
}

enforcement() {
  python3 "$HERE/plugin_enforcement.py" --pairs 2000 --starts 20 --tasks 200 --runs 7 --bin "$BIN"
}

hostile() {
  TASKRUSH=$T python3 "$HERE/hostile.py"
}

# Restoring 1,000 outputs (100 MB) beside re-running the task, turbo and nx
# (installed with npm into $BENCH_DIR/js-peers; skipped when npm cannot).
outputs() {
  local peers=$BENCH_DIR/js-peers
  if [ ! -x "$peers/node_modules/.bin/nx" ] && command -v npm >/dev/null; then
    mkdir -p "$peers" && (cd "$peers" && timeout 300 npm i --no-audit --no-fund turbo@2 nx@24.0.6 >/dev/null 2>&1) || true
  fi
  python3 "$HERE/outputs_restore.py" --runs 5 --bin "$BIN" --peers "$peers"
}

machine
for s in "${steps[@]}"; do
  case $s in
    peers|extras|plugins|enforcement|hostile|outputs) echo; echo "# $s"; "$s" ;;
    *) echo "unknown step $s (peers, extras, plugins, enforcement, hostile, outputs)" >&2; exit 2 ;;
  esac
done
