# Shared helpers for the cluster/ scripts. Sourced, not run.
#
# Everything here is named after one fixed layout: compose project `drover`,
# containers drover-node1..N, network drover-net (172.28.0.0/24), node i at
# 172.28.0.1i:7000, named volumes drover_node<i>-data.

CLUSTER_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PROJECT=drover
NETWORK=drover-net
SUBNET_PREFIX=172.28.0
NODE_PORT=7000
DROVER_IMAGE="${DROVER_IMAGE:-drover:dev}"
# The drover binary used on the host as a client (and by build-image.sh).
DROVER_BIN="${DROVER_BIN:-$CLUSTER_DIR/../target/release/drover}"

PROG="$(basename "$0")"

die() {
    echo "$PROG: $*" >&2
    exit 1
}

usage_die() {
    echo "$PROG: $*" >&2
    exit 2
}

need_docker() {
    command -v docker >/dev/null 2>&1 || die "docker is not installed (no 'docker' on PATH)"
    docker info >/dev/null 2>&1 || die "cannot talk to the Docker engine ('docker info' fails: is dockerd running, may this user use it?)"
}

need_compose() {
    command -v docker-compose >/dev/null 2>&1 || die "docker-compose (v1 CLI) is not installed (no 'docker-compose' on PATH)"
}

need_client() {
    [ -x "$DROVER_BIN" ] || die "no drover binary at $DROVER_BIN (build it, or set DROVER_BIN)"
}

# The compose file for a cluster of $1 nodes.
compose_file() {
    case "$1" in
        3 | 5) echo "$CLUSTER_DIR/docker-compose.$1.yml" ;;
        *) usage_die "cluster size must be 3 or 5, not '$1'" ;;
    esac
}

# Where disk-fault filesystems are mounted: node i's data on its own small
# tmpfs at $DISK_ROOT/node<i> (DROVER_DISK_FAULTS=1 up.sh), so that
# faults.sh fill can fill it from outside.
DISK_ROOT="${DROVER_DISK_ROOT:-$(cd "$CLUSTER_DIR/.." && pwd)/target/cluster-disks}"

disk_dir() {
    echo "$DISK_ROOT/node$1"
}

has_disk() {
    mountpoint -q "$(disk_dir "$1")" 2>/dev/null
}

compose() {
    local n="$1" i
    shift
    # Nodes whose data lives on a disk-fault filesystem bind it at /data.
    for ((i = 1; i <= 5; i++)); do
        if has_disk "$i"; then export "DROVER_DATA_$i=$(disk_dir "$i")"; fi
    done
    local files=(-f "$(compose_file "$n")")
    # TLS (DROVER_TLS_DIR holds `drover admin certs` output): every node
    # serves TLS and proves itself to its peers with node-<i>.pem.
    if [ -n "${DROVER_TLS_DIR:-}" ]; then
        local override="$DROVER_TLS_DIR/compose.tls.$n.yml"
        {
            echo 'version: "2.4"'
            echo 'services:'
            for ((i = 1; i <= n; i++)); do
                echo "  node$i:"
                echo "    volumes: [\"$DROVER_TLS_DIR:/certs:ro\"]"
                echo "    environment:"
                echo "      DROVER_TLS_CERT: /certs/node-$i.pem"
                echo "      DROVER_TLS_KEY: /certs/node-$i-key.pem"
                echo "      DROVER_CLIENT_CA: /certs/ca.pem"
                echo "      DROVER_PEER_CA: /certs/ca.pem"
                echo "      DROVER_PEER_CERT: /certs/node-$i.pem"
                echo "      DROVER_PEER_KEY: /certs/node-$i-key.pem"
            done
        } >"$override"
        files+=(-f "$override")
    fi
    docker-compose -p "$PROJECT" "${files[@]}" "$@"
}

# Host ports the nodes are published on: node i at DROVER_HOST_PORT_BASE+i
# (default 7000, so 7001..700N), on DROVER_PUBLISH_ADDR (default 127.0.0.1).
export_host_ports() {
    local base="${DROVER_HOST_PORT_BASE:-7000}" i
    [[ "$base" =~ ^[0-9]+$ ]] && [ "$base" -ge 1 ] && [ "$base" -le 65530 ] ||
        usage_die "DROVER_HOST_PORT_BASE must be a port number, not '$base'"
    for i in 1 2 3 4 5; do
        export "DROVER_PORT_$i=$((base + i))"
    done
    export DROVER_PUBLISH_ADDR="${DROVER_PUBLISH_ADDR:-127.0.0.1}"
}

node_ip() { echo "$SUBNET_PREFIX.1$1"; }
node_name() { echo "drover-node$1"; }

# Ids of this project's containers (running or not), ascending.
existing_nodes() {
    docker ps -a --filter "label=com.docker.compose.project=$PROJECT" --format '{{.Names}}' |
        sed -n 's/^drover-node\([0-9][0-9]*\)$/\1/p' | sort -n
}

# Container state: running, paused, exited, created, ... or "missing".
node_state() {
    docker inspect -f '{{.State.Status}}' "$(node_name "$1")" 2>/dev/null || echo missing
}

# Whether the node's container is attached to drover-net.
node_connected() {
    local nets
    nets="$(docker inspect -f '{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}' "$(node_name "$1")" 2>/dev/null)" || return 1
    [[ " $nets " == *" $NETWORK "* ]]
}

# Attach the node to drover-net again, with its fixed IP (and its compose
# service name as DNS alias).
reconnect_node() {
    docker network connect --ip "$(node_ip "$1")" --alias "node$1" "$NETWORK" "$(node_name "$1")" >/dev/null
}

# Endpoints (node IPs) of the nodes that exist, comma-separated.
endpoints_of() {
    local out="" i
    for i in "$@"; do
        out="${out:+$out,}$(node_ip "$i"):$NODE_PORT"
    done
    echo "$out"
}

# One `drover cluster status --json` answer (a single line of JSON), asked of
# every running, connected node in parallel with a short timeout each; the
# answer with the highest term wins (status is always answered by a node that
# believes it leads, so stale views lose). Fails if no node answers.
cluster_status_json() {
    local tmp i best
    tmp="$(mktemp -d "${TMPDIR:-/tmp}/drover-status.XXXXXX")"
    for i in $(existing_nodes); do
        [ "$(node_state "$i")" = running ] && node_connected "$i" || continue
        (
            DROVER_ENDPOINT="$(node_ip "$i"):$NODE_PORT" timeout "${DROVER_STATUS_TIMEOUT:-3}" \
                "$DROVER_BIN" cluster status --json >"$tmp/$i" 2>/dev/null || rm -f "$tmp/$i"
        ) &
    done
    wait
    best="$(cat "$tmp"/* 2>/dev/null | jq -c -s 'map(select(.leader_id > 0)) | max_by(.term) // empty' 2>/dev/null)"
    rm -rf "$tmp"
    [ -n "$best" ] || return 1
    echo "$best"
}

need_jq() {
    command -v jq >/dev/null 2>&1 || die "jq is not installed (needed to read 'drover cluster status --json')"
}
