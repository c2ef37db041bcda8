#!/usr/bin/env bash
# Start a 3- or 5-node drover cluster in Docker and wait until it has a leader
# and every member is reachable. Builds drover:dev first if it is missing. On
# a cluster that is already up it undoes every fault (like faults.sh heal-all).
#
#   ./up.sh [3|5]                    (default 3)
#   eval "$(./up.sh 3 | tail -n 1)"  sets DROVER_ENDPOINT in this shell
#
#   DROVER_IMAGE           image to run (default drover:dev)
#   DROVER_REBUILD=1       rebuild the image from DROVER_BIN even if it exists
#   DROVER_HOST_PORT_BASE  node i is published on host port BASE+i (default 7000)
#   DROVER_PUBLISH_ADDR    host address to publish on (default 127.0.0.1)
#   DROVER_NODE_LOG        RUST_LOG inside the nodes (default info)
#   DROVER_UP_TIMEOUT      seconds to wait for a settled leader (default 60)
#   DROVER_DISK_FAULTS=1   each node's data on a tmpfs of its own (needs root),
#                          so that faults.sh fill/unfill can fill it
#   DROVER_DISK_SIZE       size of each such tmpfs (default 768m)
set -euo pipefail
source "$(dirname "$0")/lib.sh"

[ $# -le 1 ] || usage_die "usage: $PROG [3|5]"
n="${1:-3}"
compose_file "$n" >/dev/null
need_docker
need_compose
need_client
need_jq
export_host_ports
export DROVER_IMAGE

existing="$(existing_nodes | tr '\n' ' ')"
if [ -n "$existing" ]; then
    count="$(wc -w <<<"$existing")"
    max="$(tr ' ' '\n' <<<"$existing" | sed '/^$/d' | tail -n 1)"
    if [ "$max" != "$n" ] || [ "$count" != "$n" ]; then
        die "a cluster with nodes ${existing% } already exists (project $PROJECT): run ./down.sh first"
    fi
    # Already up: undo pauses and partitions too (compose starts stopped nodes).
    for i in $existing; do
        [ "$(node_state "$i")" = paused ] && docker unpause "$(node_name "$i")" >/dev/null
        node_connected "$i" || reconnect_node "$i"
    done
else
    # A fresh start: the host ports must be free, or half the nodes would start.
    for ((i = 1; i <= n; i++)); do
        var="DROVER_PORT_$i"
        port="${!var}"
        busy=""
        if command -v ss >/dev/null 2>&1; then
            [ -n "$(ss -Hltn "( sport = :$port )" 2>/dev/null)" ] && busy=1
        elif (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            busy=1
        fi
        [ -z "$busy" ] || die "host port $port (node $i) is already in use: set DROVER_HOST_PORT_BASE (e.g. DROVER_HOST_PORT_BASE=17000 publishes on 17001..)"
    done
    if [ "${DROVER_DISK_FAULTS:-0}" = 1 ]; then
        for ((i = 1; i <= n; i++)); do
            d="$(disk_dir "$i")"
            mkdir -p "$d"
            has_disk "$i" && umount -l "$d"
            mount -t tmpfs -o "size=${DROVER_DISK_SIZE:-768m}" tmpfs "$d" ||
                die "cannot mount a tmpfs at $d for disk faults (this needs root)"
        done
    fi
fi

if [ "${DROVER_REBUILD:-0}" = 1 ] || ! docker image inspect "$DROVER_IMAGE" >/dev/null 2>&1; then
    "$CLUSTER_DIR/build-image.sh"
else
    built_from="$(docker image inspect -f '{{index .Config.Labels "drover.binary-id"}}' "$DROVER_IMAGE" 2>/dev/null || true)"
    current="$(stat -c '%s-%Y' "$(readlink -f "$DROVER_BIN")")"
    if [ -n "$built_from" ] && [ "$built_from" != "$current" ]; then
        # Never test an old build by accident: the image follows the binary.
        echo "$PROG: $DROVER_IMAGE was built from another build of $DROVER_BIN; rebuilding it" >&2
        "$CLUSTER_DIR/build-image.sh"
    fi
fi

started_ms="$(date +%s%3N)"
compose "$n" up -d

deadline=$(($(date +%s) + ${DROVER_UP_TIMEOUT:-60}))
status=""
while :; do
    if status="$(cluster_status_json)" &&
        [ "$(jq --argjson n "$n" '.leader_id > 0 and (.members | length) == $n and all(.members[]; .reachable)' <<<"$status")" = true ]; then
        break
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
        echo "$PROG: last status: ${status:-none}" >&2
        die "no settled leader after ${DROVER_UP_TIMEOUT:-60}s; see 'docker logs drover-node1' (and the others)"
    fi
    sleep 0.2
done
took_ms=$(($(date +%s%3N) - started_ms))

echo "drover cluster of $n nodes is up (leader: node $(jq .leader_id <<<"$status"), term $(jq .term <<<"$status"), $((took_ms / 1000)).$((took_ms % 1000 / 100))s after 'docker-compose up')"
for ((i = 1; i <= n; i++)); do
    var="DROVER_PORT_$i"
    printf '  node%d  %-18s  host: %s:%s  container: %s\n' "$i" "$(node_ip "$i"):$NODE_PORT" "$DROVER_PUBLISH_ADDR" "${!var}" "$(node_name "$i")"
done
echo "export DROVER_ENDPOINT=$(endpoints_of $(seq 1 "$n"))"
