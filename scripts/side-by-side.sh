#!/usr/bin/env bash
# Run test groups side by side and fail if any fails: side-by-side.sh NAME 'COMMAND' [NAME 'COMMAND' ...]
#
# Why: the integration suites spend much of their time waiting (on sandboxes starting, servers, timeouts), so
# groups that share nothing run together in a fraction of the serial time. Each group is its own pytest with its
# own servers and data dirs; what they share on the host (network slots, namespace names, the build caches) is
# claimed or locked host-wide, as it is between servers. Each group's output goes to a log printed whole when all
# have ended (a passing group first, a failing one last, so a failure is at the bottom); a line says when each ends.
set -uo pipefail
if (( $# == 0 || $# % 2 )); then
  echo "usage: $0 NAME 'COMMAND' [NAME 'COMMAND' ...]" >&2
  exit 2
fi
logs=$(mktemp -d)
declare -A pid_of=() name_of=()
names=()
started=$SECONDS
while (( $# )); do
  name=$1 command=$2
  shift 2
  bash -c "$command" >"$logs/$name.log" 2>&1 &
  pid_of[$name]=$!
  name_of[$!]=$name
  names+=("$name")
  echo "== $name started: $command"
done
# Stop only what we started: on Ctrl-C or a CI timeout each group's own process (pytest ends its servers).
trap 'for p in "${pid_of[@]}"; do kill "$p" 2>/dev/null; done; wait; rm -rf "$logs"; exit 130' INT TERM
declare -A status_of=()
for _ in "${names[@]}"; do
  code=0
  wait -n -p ended || code=$?
  status_of[${name_of[$ended]}]=$code
  echo "== ${name_of[$ended]} ended (exit $code) after $((SECONDS - started)) s: $(tail -n 1 "$logs/${name_of[$ended]}.log")"
done
status=0
for pass in ok failed; do
  for name in "${names[@]}"; do
    code=${status_of[$name]}
    if [[ $pass == ok && $code == 0 ]] || [[ $pass == failed && $code != 0 ]]; then
      echo "== $name (exit $code)"
      cat "$logs/$name.log"
    fi
    [[ $code == 0 ]] || status=1
  done
done
rm -rf "$logs"
exit "$status"
