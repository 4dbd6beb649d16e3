#!/usr/bin/env bash
# Runs the tests of every plugin SDK (Python, Node.js, Go) and example, and
# builds the Go example's binary. Installs Go from apt when it is missing
# (idempotent). Exits non-zero when any step failed; each test runner prints
# its own summary. Called by scripts/test; runs from any directory.
set -uo pipefail
cd "$(dirname "$0")"

if ! command -v go >/dev/null 2>&1; then
    sudo=""
    if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then sudo="sudo"; fi
    $sudo apt-get update && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y golang-go || {
        echo "error: cannot install Go (apt-get install golang-go)" >&2
        exit 1
    }
fi
# The Go code uses the standard library only and `replace` directives:
# never reach for the network, never switch toolchains.
export GOPROXY=off GOTOOLCHAIN=local GOFLAGS=-mod=readonly

failed=()
step() {
    local name=$1
    shift
    echo "== $name"
    if ! (set -e; "$@"); then
        failed+=("$name")
    fi
}

step "python sdk" sh -c 'cd python && python3 -m unittest discover -s tests'
step "node sdk" sh -c 'cd node && node --test'
step "go sdk" sh -c 'cd go && go vet ./... && go test -count=1 ./...'
step "example slack-notify (python)" sh -c 'cd examples/slack-notify && python3 -m unittest'
step "example task-auditor (python)" sh -c 'cd examples/task-auditor && python3 -m unittest'
step "example security-scanner (node)" sh -c 'cd examples/security-scanner && node --test'
step "example git-hook (go): build" examples/git-hook/build.sh
step "example git-hook (go): test" sh -c 'cd examples/git-hook && go vet ./... && go test -count=1 ./...'

if [ ${#failed[@]} -ne 0 ]; then
    printf 'plugins-external: failed: %s\n' "$(IFS=,; echo "${failed[*]}" | sed 's/,/, /g')" >&2
    exit 1
fi
echo "plugins-external: all SDK and example tests passed"
