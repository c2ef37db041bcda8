#!/usr/bin/env bash
# Stop and remove the drover cluster: containers, the drover-net network and
# every node's volume. The next ./up.sh starts from a clean slate. Safe to run
# when nothing is up; removes leftovers of either size (3 or 5) whatever the
# argument. Keeps the image.
#
#   ./down.sh [3|5]        (default: the size that is up, else 5)
#   DROVER_DOWN_TIMEOUT    seconds of SIGTERM grace before SIGKILL (default 5)
set -euo pipefail
source "$(dirname "$0")/lib.sh"

[ $# -le 1 ] || usage_die "usage: $PROG [3|5]"
need_docker
need_compose
export_host_ports

nodes="$(existing_nodes | tr '\n' ' ')"
if [ $# -eq 1 ]; then
    n="$1"
    compose_file "$n" >/dev/null
else
    n=5
    [ -n "$nodes" ] && [ "$(wc -w <<<"$nodes")" -le 3 ] && n=3
fi

# Undo faults first, so most nodes stop gracefully and fast: a paused
# container cannot handle SIGTERM, and a partitioned node takes ~30s to drain
# its connections. The volumes are deleted anyway, so nodes still running
# after DROVER_DOWN_TIMEOUT seconds (default 5) are SIGKILLed.
for i in $nodes; do
    st="$(node_state "$i")"
    [ "$st" = paused ] && docker unpause "$(node_name "$i")" >/dev/null
    if [ "$st" = running ] || [ "$st" = paused ]; then
        node_connected "$i" ||
            reconnect_node "$i" 2>/dev/null || true
    fi
done

compose "$n" down --volumes --remove-orphans --timeout "${DROVER_DOWN_TIMEOUT:-5}"
# Disk-fault filesystems (DROVER_DISK_FAULTS=1 up.sh) go with the cluster.
for ((i = 1; i <= 5; i++)); do
    if has_disk "$i"; then umount -l "$(disk_dir "$i")"; fi
done

# Leftovers from the other size, or from a compose file changed since up.
left="$(docker ps -aq --filter "label=com.docker.compose.project=$PROJECT")"
[ -z "$left" ] || docker rm -f $left >/dev/null
vols="$(docker volume ls -q --filter "label=com.docker.compose.project=$PROJECT")"
[ -z "$vols" ] || docker volume rm $vols >/dev/null
net="$(docker network ls -q --filter "name=^$NETWORK\$" --filter "label=com.docker.compose.project=$PROJECT")"
[ -z "$net" ] || docker network rm "$net" >/dev/null
echo "drover cluster removed (containers, network $NETWORK, volumes); image $DROVER_IMAGE kept"
