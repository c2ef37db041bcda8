#!/usr/bin/env bash
# Fault injection for the Docker cluster started by ./up.sh. Each action is
# undone by its counterpart, is safe to repeat, and prints one line saying
# what it did (leader and isolate-leader print just the node id on stdout;
# the description goes to stderr).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

usage() {
    cat <<'EOF'
usage: faults.sh COMMAND [NODE...]
  kill N          SIGKILL node N (docker kill -s KILL)        undo: start N
  stop N          stop node N gracefully (SIGTERM, 15s)       undo: start N
  start N         start stopped node N again, same volume
  pause N         freeze node N (docker pause)                undo: unpause N
  unpause N       thaw node N
  partition N...  cut nodes off the network (each from all others: disconnected
                  from drover-net)                            undo: heal N...
  heal [N...]     reconnect nodes with their fixed IP; no args: every cut-off node
  isolate-leader  partition the current leader; prints its id
  fill N [LEFT]   fill node N's data filesystem from outside until LEFT bytes
                  are free (default 0: full); needs DROVER_DISK_FAULTS=1 up.sh
                                                              undo: unfill N
  unfill N        delete the filler: node N has its space back
  skew N OFFSET   restart node N with its wall clock off by OFFSET ("+1h",
                  "-30s"); the container is recreated, its volume kept
                                                              undo: unskew N
  unskew N        restart node N with a correct clock
  corrupt N [wal|sst]
                  stop node N (SIGTERM) if it runs, then flip 64 bytes in the
                  middle of its newest WAL (default) or largest table file
                  (flushing its WAL into table files first if it has none);
                  it then refuses to start (exit 65)          undo: rejoin N
  rejoin N        the recovery: `drover admin rejoin` on node N's stopped
                  volume (the other nodes must be up), then start it: it comes
                  back empty under a new Raft id and catches up
  leader          print the current leader's node number (N of drover-nodeN;
                  its Raft id unless the node was rebuilt by rejoin)
  wait-leader [S] wait up to S seconds (default 30) for a leader; print its id
  heal-all        unfill, unpause, reconnect and start every node (undo any mix of faults)
  status          each node's container state and network attachment
EOF
}

# Validate node ids against the containers that exist.
check_nodes() {
    [ $# -gt 0 ] || usage_die "$cmd needs a node id (e.g. $PROG $cmd 2)"
    local have i
    for i in "$@"; do
        [[ "$i" =~ ^[1-9][0-9]*$ ]] || usage_die "'$i' is not a node id (a positive integer)"
    done
    need_cluster
    have=" $(existing_nodes | tr '\n' ' ')"
    for i in "$@"; do
        [[ "$have" == *" $i "* ]] || die "no node $i: the cluster has nodes${have% }"
    done
}

one_node() {
    [ $# -le 1 ] || usage_die "$cmd takes one node id, not '$*'"
    check_nodes "$@"
}

do_kill() {
    one_node "$@"
    local st
    st="$(node_state "$1")"
    case "$st" in
        running | paused)
            docker kill -s KILL "$(node_name "$1")" >/dev/null
            echo "killed node $1 (SIGKILL$([ "$st" = paused ] && echo ', it was paused'))"
            ;;
        *) echo "node $1 is already down ($st)" ;;
    esac
}

do_stop() {
    one_node "$@"
    local st
    st="$(node_state "$1")"
    case "$st" in
        paused)
            docker unpause "$(node_name "$1")" >/dev/null
            docker stop -t 15 "$(node_name "$1")" >/dev/null
            echo "stopped node $1 (unpaused, then SIGTERM)"
            ;;
        running)
            docker stop -t 15 "$(node_name "$1")" >/dev/null
            echo "stopped node $1 (SIGTERM)"
            ;;
        *) echo "node $1 is already down ($st)" ;;
    esac
}

do_start() {
    one_node "$@"
    local st note=""
    st="$(node_state "$1")"
    node_connected "$1" || note="; still partitioned: heal $1 to reconnect it"
    case "$st" in
        running) echo "node $1 is already running${note:+ (${note#; })}" ;;
        paused) echo "node $1 is running but paused (unpause $1 to thaw it$note)" ;;
        *)
            docker start "$(node_name "$1")" >/dev/null
            echo "started node $1 (same volume$note)"
            ;;
    esac
}

do_pause() {
    one_node "$@"
    local st
    st="$(node_state "$1")"
    case "$st" in
        running)
            docker pause "$(node_name "$1")" >/dev/null
            echo "paused node $1"
            ;;
        paused) echo "node $1 is already paused" ;;
        *) die "node $1 is not running ($st): start it before pausing it" ;;
    esac
}

do_unpause() {
    one_node "$@"
    if [ "$(node_state "$1")" = paused ]; then
        docker unpause "$(node_name "$1")" >/dev/null
        echo "unpaused node $1"
    else
        echo "node $1 is not paused ($(node_state "$1"))"
    fi
}

disconnect() {
    docker network disconnect "$NETWORK" "$(node_name "$1")" >/dev/null
}

do_partition() {
    check_nodes "$@"
    local i done=() already=()
    for i in "$@"; do
        if node_connected "$i"; then
            disconnect "$i"
            done+=("$i")
        else
            already+=("$i")
        fi
    done
    local msg=""
    [ ${#done[@]} -eq 0 ] || msg="partitioned node ${done[*]} (disconnected from $NETWORK)"
    [ ${#already[@]} -eq 0 ] || msg="${msg:+$msg; }node ${already[*]} already partitioned"
    echo "$msg"
}

do_heal() {
    local nodes=("$@") i done=() already=()
    if [ $# -eq 0 ]; then
        need_cluster
        mapfile -t nodes < <(existing_nodes)
    else
        check_nodes "$@"
    fi
    for i in "${nodes[@]}"; do
        if node_connected "$i"; then
            already+=("$i")
        else
            reconnect_node "$i"
            done+=("$i")
        fi
    done
    if [ ${#done[@]} -gt 0 ]; then
        local ips=() i
        for i in "${done[@]}"; do ips+=("$(node_ip "$i")"); done
        echo "healed node ${done[*]} (reconnected to $NETWORK at ${ips[*]})"
    elif [ $# -eq 0 ]; then
        echo "nothing to heal: every node is connected to $NETWORK"
    else
        echo "node ${already[*]} already connected to $NETWORK"
    fi
}

do_heal_all() {
    [ $# -eq 0 ] || usage_die "heal-all takes no arguments"
    local nodes i unpaused=() reconnected=() started=() freed=()
    need_cluster
    mapfile -t nodes < <(existing_nodes)
    for i in "${nodes[@]}"; do
        if has_disk "$i" && compgen -G "$(disk_dir "$i")/filler.*" >/dev/null; then
            rm -f "$(disk_dir "$i")"/filler.*
            freed+=("$i")
        fi
        if [ "$(node_state "$i")" = paused ]; then
            docker unpause "$(node_name "$i")" >/dev/null
            unpaused+=("$i")
        fi
    done
    for i in "${nodes[@]}"; do
        if ! node_connected "$i"; then
            reconnect_node "$i"
            reconnected+=("$i")
        fi
    done
    for i in "${nodes[@]}"; do
        case "$(node_state "$i")" in
            running | paused) ;;
            *)
                docker start "$(node_name "$i")" >/dev/null
                started+=("$i")
                ;;
        esac
    done
    local msg=""
    [ ${#unpaused[@]} -eq 0 ] || msg="unpaused node ${unpaused[*]}"
    [ ${#reconnected[@]} -eq 0 ] || msg="${msg:+$msg; }reconnected node ${reconnected[*]}"
    [ ${#started[@]} -eq 0 ] || msg="${msg:+$msg; }started node ${started[*]}"
    [ ${#freed[@]} -eq 0 ] || msg="${msg:+$msg; }freed the disk of node ${freed[*]}"
    echo "heal-all: ${msg:-nothing to undo, every node is running and connected}"
}

need_cluster() {
    [ -n "$(existing_nodes)" ] || die "no drover cluster is up (no drover-node* containers of project $PROJECT): run ./up.sh"
}

# The node number (container drover-nodeN) of the leader in status JSON $1:
# found by the leader's address (172.28.0.1N), so that it is right for a
# node rebuilt by rejoin, whose Raft id changed.
leader_node() {
    local id addr
    id="$(jq .leader_id <<<"$1")"
    addr="$(jq -r --argjson l "$id" '.members[] | select(.id == $l) | .addr' <<<"$1")"
    if [[ "$addr" =~ ^${SUBNET_PREFIX//./\\.}\.1([0-9]):$NODE_PORT$ ]]; then
        echo "${BASH_REMATCH[1]}"
    else
        echo "$id"
    fi
}

do_leader() {
    [ $# -eq 0 ] || usage_die "leader takes no arguments"
    local s
    need_cluster
    s="$(cluster_status_json)" || die "no leader: no running, connected node reports one (an election may be under way)"
    leader_node "$s"
}

do_wait_leader() {
    [ $# -le 1 ] || usage_die "usage: $PROG wait-leader [SECONDS]"
    local secs="${1:-30}" s deadline
    [[ "$secs" =~ ^[0-9]+$ ]] || usage_die "'$secs' is not a number of seconds"
    need_cluster
    # Short attempts: while there is no leader each one lasts its whole timeout.
    export DROVER_STATUS_TIMEOUT="${DROVER_STATUS_TIMEOUT:-1.5}"
    deadline=$(($(date +%s) + secs))
    until s="$(cluster_status_json)"; do
        [ "$(date +%s)" -lt "$deadline" ] || die "no leader within ${secs}s"
        sleep 0.2
    done
    leader_node "$s"
}

do_isolate_leader() {
    [ $# -eq 0 ] || usage_die "isolate-leader takes no arguments"
    local s id
    need_cluster
    s="$(cluster_status_json)" || die "no leader to isolate: no running, connected node reports one"
    id="$(leader_node "$s")"
    disconnect "$id"
    echo "isolated leader node $id (term $(jq .term <<<"$s")): disconnected from $NETWORK" >&2
    echo "$id"
}

# Where the image keeps libfaketime (build-image.sh copies it there).
FAKETIME_LIB=/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1

# An offset like +1h, -30s or 500ms as libfaketime's relative offset in
# seconds ("+3600", "-30", "+0.500").
faketime_offset() {
    local sign="+" v="$1" n unit
    case "$v" in [+-]*) sign="${v:0:1}"; v="${v:1}" ;; esac
    n="${v%%[a-z]*}"; unit="${v#"$n"}"
    case "$unit" in
        ms) printf '%s%d.%03d' "$sign" $((n / 1000)) $((n % 1000)) ;;
        s) echo "$sign$n" ;;
        m) echo "$sign$((n * 60))" ;;
        h) echo "$sign$((n * 3600))" ;;
    esac
}

# Recreate node $1's container with its wall clock off by $2 (same volume
# and IP): libfaketime preloaded; with $2 = 0s, without it.
recreate_with_skew() {
    local n
    n="$(existing_nodes | wc -l)"
    export_host_ports
    if [ "$2" = 0s ]; then
        export "DROVER_PRELOAD_$1=" "DROVER_SKEW_$1=+0"
    else
        export "DROVER_PRELOAD_$1=$FAKETIME_LIB" "DROVER_SKEW_$1=$(faketime_offset "$2")"
    fi
    compose "$n" up -d --no-deps "node$1" >/dev/null 2>&1 || die "could not recreate node $1"
}

do_skew() {
    [ $# -eq 2 ] || usage_die "usage: $PROG skew NODE OFFSET (e.g. skew 3 +1h)"
    check_nodes "$1"
    [[ "$2" =~ ^[+-]?[0-9]+(ms|s|m|h)$ ]] || usage_die "'$2' is not an offset like +1h, -30s or 500ms"
    need_compose
    recreate_with_skew "$1" "$2"
    echo "restarted node $1 with its wall clock off by $2"
}

do_unskew() {
    one_node "$@"
    need_compose
    recreate_with_skew "$1" 0s
    echo "restarted node $1 with a correct clock"
}

do_fill() {
    [ $# -ge 1 ] && [ $# -le 2 ] || usage_die "usage: $PROG fill NODE [BYTES_LEFT]"
    check_nodes "$1"
    local left="${2:-0}" d free
    [[ "$left" =~ ^[0-9]+$ ]] || usage_die "'$left' is not a number of bytes"
    has_disk "$1" || die "node $1's data is not on a disk-fault filesystem: start the cluster with DROVER_DISK_FAULTS=1 ./up.sh"
    d="$(disk_dir "$1")"
    free=$(($(stat -f -c '%a*%S' "$d")))
    if [ "$free" -gt "$left" ]; then
        # fallocate is instant on tmpfs; dd is the fallback. A full disk is
        # the point, so "no space left" ends the fill, not the script.
        fallocate -l $((free - left)) "$d/filler.$(date +%s%N)" 2>/dev/null ||
            dd if=/dev/zero of="$d/filler.$(date +%s%N)" bs=1M count=$(((free - left) >> 20)) status=none 2>/dev/null || true
    fi
    echo "filled node $1's data filesystem: $(($(stat -f -c '%a*%S' "$d") >> 20)) MiB left"
}

do_unfill() {
    one_node "$@"
    has_disk "$1" || die "node $1's data is not on a disk-fault filesystem"
    rm -f "$(disk_dir "$1")"/filler.*
    echo "freed node $1's data filesystem: $(($(stat -f -c '%a*%S' "$(disk_dir "$1")") >> 20)) MiB free"
}

# Run the drover image once more with node $1's volumes (and, with
# --network, on drover-net): `drover ARGS...` against its stopped data.
with_volume() {
    local node="$1" net="$2"
    shift 2
    local env=()
    if [ -n "${DROVER_TLS_DIR:-}" ]; then
        # The node's container has the certificates at /certs.
        env+=(-e DROVER_CA=/certs/ca.pem -e DROVER_CERT=/certs/client.pem -e DROVER_KEY=/certs/client-key.pem)
    fi
    [ -z "${DROVER_TOKEN:-}" ] || env+=(-e DROVER_TOKEN)
    docker run --rm --volumes-from "$(node_name "$node")" --network "$net" "${env[@]}" "$DROVER_IMAGE" "$@"
}

do_corrupt() {
    [ $# -ge 1 ] && [ $# -le 2 ] || usage_die "usage: $PROG corrupt NODE [wal|sst]"
    check_nodes "$1"
    local what="${2:-wal}" st out
    [[ "$what" =~ ^(wal|sst)$ ]] || usage_die "'$what' is not wal or sst"
    st="$(node_state "$1")"
    case "$st" in
        paused) docker unpause "$(node_name "$1")" >/dev/null; docker stop -t 15 "$(node_name "$1")" >/dev/null ;;
        running) docker stop -t 15 "$(node_name "$1")" >/dev/null ;;
    esac
    out="$(with_volume "$1" none chaos corrupt --data-dir /data --target "$what")" || die "could not damage node $1's data"
    echo "stopped node $1 and $out"
}

do_rejoin() {
    one_node "$@"
    local others=() i out
    for i in $(existing_nodes); do [ "$i" = "$1" ] || others+=("$i"); done
    case "$(node_state "$1")" in
        running | paused) die "node $1 is running: rejoin rebuilds a stopped node (stop it, or it has not refused to start yet)" ;;
    esac
    out="$(with_volume "$1" "$NETWORK" admin rejoin --data-dir /data --endpoint "$(endpoints_of "${others[@]}")" 2>&1)" ||
        die "admin rejoin of node $1 failed: $out"
    docker start "$(node_name "$1")" >/dev/null
    echo "rejoined node $1: $(grep -o 'belongs to node [0-9]*' <<<"$out" | head -n 1 | sed 's/belongs to //') (started; it catches up and becomes a voter)"
}

do_status() {
    [ $# -eq 0 ] || usage_die "status takes no arguments"
    local nodes i
    need_cluster
    mapfile -t nodes < <(existing_nodes)
    for i in "${nodes[@]}"; do
        printf 'node %s  %-8s  %s\n' "$i" "$(node_state "$i")" \
            "$(node_connected "$i" && echo "connected $(node_ip "$i"):$NODE_PORT" || echo "partitioned (not on $NETWORK)")"
    done
}

[ $# -ge 1 ] || { usage >&2; exit 2; }
cmd="$1"
shift
case "$cmd" in
    -h | --help | help) usage; exit 0 ;;
esac
need_docker
case "$cmd" in
    kill) do_kill "$@" ;;
    stop) do_stop "$@" ;;
    start) do_start "$@" ;;
    pause) do_pause "$@" ;;
    unpause) do_unpause "$@" ;;
    partition) do_partition "$@" ;;
    heal) do_heal "$@" ;;
    heal-all) do_heal_all "$@" ;;
    leader) need_client; need_jq; do_leader "$@" ;;
    wait-leader) need_client; need_jq; do_wait_leader "$@" ;;
    isolate-leader) need_client; need_jq; do_isolate_leader "$@" ;;
    status) do_status "$@" ;;
    skew) do_skew "$@" ;;
    corrupt) do_corrupt "$@" ;;
    rejoin) need_jq; do_rejoin "$@" ;;
    fill) do_fill "$@" ;;
    unfill) do_unfill "$@" ;;
    unskew) do_unskew "$@" ;;
    *) usage_die "unknown command '$cmd' (try: $PROG help)" ;;
esac
