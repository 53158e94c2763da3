# Sourced by scripts/demo and scripts/bench: a throwaway 3-member etcd cluster on free loopback ports.
# After `start_local_cluster`: $ETCD_DIR, $ENDPOINTS (comma-separated), $CLIENT_URLS and $ETCD_PIDS (arrays).
# `stop_local_cluster` kills the members and removes the directory; callers trap it on EXIT.

# Free ports below Linux's ephemeral range (32768-60999), so that no client's local port takes one between the
# moment it is found free and the moment etcd binds it.
free_ports() {
  python3 - "$1" <<'PY'
import random, socket, sys
socks = []
while len(socks) < int(sys.argv[1]):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", random.randint(20000, 32000)))
        socks.append(s)
    except OSError:
        s.close()
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

start_local_cluster() {
  local n=${1:-3}
  ETCD_DIR=$(mktemp -d -t etcd-sentinel-local-XXXXXX)
  read -r -a ports <<<"$(free_ports $((2 * n)))"
  local initial="" i
  for ((i = 0; i < n; i++)); do
    initial+="${initial:+,}m$i=http://127.0.0.1:${ports[$((2 * i + 1))]}"
  done
  CLIENT_URLS=()
  ETCD_PIDS=()
  for ((i = 0; i < n; i++)); do
    local client="http://127.0.0.1:${ports[$((2 * i))]}" peer="http://127.0.0.1:${ports[$((2 * i + 1))]}"
    "${ETCD_BIN:-etcd}" --name "m$i" --data-dir "$ETCD_DIR/m$i.etcd" \
      --listen-client-urls "$client" --advertise-client-urls "$client" \
      --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
      --initial-cluster "$initial" --initial-cluster-state new \
      --initial-cluster-token "local-$$" >"$ETCD_DIR/m$i.log" 2>&1 &
    ETCD_PIDS+=($!)
    CLIENT_URLS+=("$client")
  done
  ENDPOINTS=$(IFS=,; echo "${CLIENT_URLS[*]}")
  local deadline=$((SECONDS + 20))
  until ETCDCTL_API=3 etcdctl --endpoints "$ENDPOINTS" endpoint health >/dev/null 2>&1; do
    if ((SECONDS > deadline)); then
      echo "the local etcd cluster did not become healthy; logs in $ETCD_DIR" >&2
      return 1
    fi
    sleep 0.2
  done
}

stop_local_cluster() {
  # Callers run under `set -e`, and `wait` on a killed process returns 137: every step must tolerate failure,
  # or the loop stops after the first member and leaks the others.
  local pid
  for pid in "${ETCD_PIDS[@]:-}"; do
    [ -n "$pid" ] || continue
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  ETCD_PIDS=()
  if [ -n "${ETCD_DIR:-}" ]; then
    # Safety net: anything still running on this cluster's data directories.
    pkill -9 -f -- "--data-dir $ETCD_DIR/" 2>/dev/null || true
    rm -rf "$ETCD_DIR"
  fi
  return 0
}
