#!/usr/bin/env bash
# Make sure a local Docker engine answers (the sandbox's docker backend and its tests need one).
#
# Idempotent: exits 0 at once when `docker info` already works. Otherwise, as root, installs
# Debian's docker.io when dockerd is missing, starts dockerd in the background (log:
# $DOCKERD_LOG, default /tmp/dockerd.log) and waits up to $DOCKERD_WAIT seconds (default 60)
# for it. Loopwright's guests only ever use network_mode=none, so when dockerd cannot set up
# its bridge and iptables rules (some VMs and nested containers lack them) it is started again
# without them. Extra flags for dockerd: $DOCKERD_FLAGS (used instead of that fallback).
set -euo pipefail

LOG="${DOCKERD_LOG:-/tmp/dockerd.log}"
WAIT="${DOCKERD_WAIT:-60}"

engine_up() {
  docker info >/dev/null 2>&1
}

say() {
  echo "start-dockerd: $*" >&2
}

if command -v docker >/dev/null 2>&1 && engine_up; then
  exit 0
fi

if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    say "no Docker engine: install it with 'sudo apt-get install -y docker.io' and run this again"
    exit 1
  fi
  say "installing docker.io with apt-get"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
fi

if [ "$(id -u)" != 0 ]; then
  say "dockerd is not running and only root can start it: run 'sudo $0'"
  exit 1
fi

# Waits for the engine; fails early when the dockerd we started has already exited.
wait_for_engine() {
  local pid="$1" deadline=$((SECONDS + WAIT))
  while [ "$SECONDS" -lt "$deadline" ]; do
    if engine_up; then
      return 0
    fi
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
      return 1
    fi
    sleep 0.5
  done
  return 1
}

start_dockerd() {
  # setsid: the engine must outlive this script and the CI step that called it.
  # shellcheck disable=SC2086 # the flags are meant to split into words
  setsid dockerd $1 >>"$LOG" 2>&1 </dev/null &
  echo $!
}

# A dockerd that is already starting (another caller, or a slow boot) is waited for, not
# doubled: two daemons would fight over /var/run/docker.sock and /var/lib/docker.
if pgrep -x dockerd >/dev/null 2>&1; then
  say "dockerd is running but not answering yet; waiting up to ${WAIT}s"
  if wait_for_engine ""; then
    exit 0
  fi
  say "dockerd never answered; last lines of $LOG:"
  tail -n 30 "$LOG" >&2 || true
  exit 1
fi

: >"$LOG"
if [ -n "${DOCKERD_FLAGS:-}" ]; then
  attempts=("$DOCKERD_FLAGS")
else
  attempts=("" "--iptables=false --ip6tables=false --bridge=none")
fi
for flags in "${attempts[@]}"; do
  say "starting dockerd ${flags:-with default flags} (log: $LOG)"
  pid=$(start_dockerd "$flags")
  if wait_for_engine "$pid"; then
    say "the Docker engine is up (dockerd pid $pid)"
    exit 0
  fi
  if kill -0 "$pid" 2>/dev/null; then
    # Still running yet silent: another attempt would only fight with it.
    say "dockerd (pid $pid) did not answer within ${WAIT}s; last lines of $LOG:"
    tail -n 30 "$LOG" >&2 || true
    exit 1
  fi
  say "dockerd ${flags:-with default flags} exited; last lines of $LOG:"
  tail -n 15 "$LOG" >&2 || true
done
say "the Docker engine did not come up"
exit 1
