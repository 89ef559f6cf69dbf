# Shared by containers/build, containers/drill and containers/ci (sourced, not run).
# shellcheck shell=bash

# podman 4.3 on our machines: the runc runtime, and explicit ulimits (the sandbox refuses
# raising RLIMIT_NOFILE to podman's default).
PODMAN_ULIMITS=(--ulimit nofile=1024:1024 --ulimit nproc=4096:4096)
BASE_IMAGE=${EDGE_BASE_IMAGE:-localhost/edge-runtime-base:bookworm}
IMAGE_PREFIX=${EDGE_IMAGE_PREFIX:-localhost/edge-runtime}

say() { echo "containers: $*" >&2; }

# Installs podman (and what building the base needs) from Debian's packages when missing.
ensure_podman() {
  local need=()
  command -v podman >/dev/null 2>&1 || need+=(podman)
  command -v runc >/dev/null 2>&1 || need+=(runc)
  command -v mmdebstrap >/dev/null 2>&1 || need+=(mmdebstrap)
  command -v newuidmap >/dev/null 2>&1 || need+=(uidmap)
  command -v fuse-overlayfs >/dev/null 2>&1 || need+=(fuse-overlayfs)
  command -v slirp4netns >/dev/null 2>&1 || need+=(slirp4netns)
  [ -d /usr/lib/cni ] || [ -d /usr/libexec/cni ] || need+=(containernetworking-plugins)
  command -v iptables >/dev/null 2>&1 || need+=(iptables)
  [ ${#need[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null 2>&1 || { say "need ${need[*]} and there is no apt-get"; return 1; }
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  say "installing ${need[*]} from Debian's packages"
  local log
  log=$(mktemp)
  if ! { DEBIAN_FRONTEND=noninteractive $sudo apt-get update &&
         DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends "${need[@]}"; } \
       >"$log" 2>&1; then
    say "apt-get failed; its output:"; cat "$log" >&2; rm -f "$log"; return 1
  fi
  rm -f "$log"
}

# The first Debian mirror (URI) in this machine's apt sources, for suite $1. Deb822 files
# (*.sources) and one-line lists are both read; nothing about the mirror lives in the repo.
apt_mirror() {
  local f uri
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    # deb822: paragraphs; the first whose Suites has the plain suite name
    uri=$(awk -v suite="$1" 'BEGIN { RS = "" }
      { if (match($0, /Suites:[^\n]*/) == 0) next
        n = split(substr($0, RSTART + 7, RLENGTH - 7), s, /[ \t]+/)
        for (i = 1; i <= n; i++) if (s[i] == suite && match($0, /URIs:[ \t]*[^ \t\n]+/)) {
          u = substr($0, RSTART, RLENGTH); sub(/URIs:[ \t]*/, "", u); print u; exit } }' "$f")
    [ -n "$uri" ] && { echo "$uri"; return 0; }
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    uri=$(awk -v suite="$1" '$1 == "deb" && $0 ~ (" " suite " ") { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' "$f")
    [ -n "$uri" ] && { echo "$uri"; return 0; }
  done
  return 1
}
