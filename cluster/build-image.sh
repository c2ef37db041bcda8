#!/usr/bin/env bash
# Build the drover node image FROM scratch: the drover binary (a stripped
# copy; the original is never touched), exactly the shared libraries `ldd`
# reports (symlinks resolved, at the paths ldd uses), an empty /data and /tmp.
# Nothing is pulled. Running it again with the same binary reuses the cached
# layers and yields the same image.
#
#   DROVER_BIN    binary to package  (default: ../target/release/drover)
#   DROVER_IMAGE  image tag          (default: drover:dev)
set -euo pipefail
source "$(dirname "$0")/lib.sh"

[ $# -eq 0 ] || usage_die "takes no arguments (set DROVER_BIN / DROVER_IMAGE instead)"
need_docker
[ -f "$DROVER_BIN" ] || die "no drover binary at $DROVER_BIN (build it with cargo build --release, or set DROVER_BIN)"
command -v ldd >/dev/null 2>&1 || die "ldd is not installed"
if command -v objcopy >/dev/null 2>&1; then
    STRIP=(objcopy --strip-debug)
elif command -v strip >/dev/null 2>&1; then
    STRIP=(strip --strip-debug)
else
    die "neither objcopy nor strip is installed (binutils)"
fi

bin="$(readlink -f "$DROVER_BIN")"
ctx="$(mktemp -d "${TMPDIR:-/tmp}/drover-image.XXXXXX")"
trap 'rm -rf "$ctx"' EXIT
root="$ctx/rootfs"
mkdir -p "$root/data" "$root/tmp"
chmod 1777 "$root/tmp"

# Debug info only (symbols stay, so panics still have readable backtraces).
"${STRIP[@]}" "$bin" "$root/drover"
chmod 0755 "$root/drover"

# Every absolute path ldd prints: "name => /path (addr)" or "/path (addr)".
libs="$(ldd "$bin" | awk '
    /not found/ { print "MISSING " $1; next }
    $2 == "=>" && $3 ~ /^\// { print $3; next }
    $1 ~ /^\// { print $1 }')"
if grep -q '^MISSING' <<<"$libs"; then
    die "ldd cannot resolve: $(grep '^MISSING' <<<"$libs" | cut -d' ' -f2 | tr '\n' ' ')"
fi
[ -n "$libs" ] || die "ldd reports no shared libraries for $bin (a static binary would need no libs, but drover is dynamic)"
# libfaketime, for the wrong-clock fault (faults.sh skew preloads it into
# one node): the library and what it links, when the host has it.
faketime_lib=/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1
if [ -f "$faketime_lib" ]; then
    libs="$(printf '%s\n%s\n' "$libs" "$faketime_lib"; ldd "$faketime_lib" | awk '
        $2 == "=>" && $3 ~ /^\// { print $3; next }
        $1 ~ /^\// { print $1 }')"
    libs="$(sort -u <<<"$libs")"
else
    echo "build-image: $faketime_lib is missing (Debian's faketime package): the image cannot skew a clock" >&2
fi
while read -r lib; do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
done <<<"$libs"

src_id="$(stat -c '%s-%Y' "$bin")"
cat >"$ctx/Dockerfile" <<EOF
FROM scratch
LABEL org.opencontainers.image.title="drover" \\
      drover.binary="$bin" \\
      drover.binary-id="$src_id"
COPY rootfs/ /
EXPOSE 7000
ENTRYPOINT ["/drover"]
EOF

echo "building $DROVER_IMAGE from $bin (libraries: $(tr '\n' ' ' <<<"$libs"))"
previous="$(docker image inspect -f '{{.Id}}' "$DROVER_IMAGE" 2>/dev/null || true)"
# (The legacy builder's deprecation notice is only shown if the build fails.)
if ! out="$(docker build --quiet -t "$DROVER_IMAGE" "$ctx" 2>&1)"; then
    echo "$out" >&2
    die "docker build failed"
fi

# Smoke test: the loader and libraries in the image are enough to run it.
docker run --rm --network none "$DROVER_IMAGE" --version >/dev/null 2>&1 ||
    die "image $DROVER_IMAGE was built but '/drover --version' fails inside it"

size="$(docker image inspect -f '{{.Size}}' "$DROVER_IMAGE")"
id="$(docker image inspect -f '{{.Id}}' "$DROVER_IMAGE")"
# The image this tag pointed at before, if now untagged and unused: drop it
# (docker refuses while a container still uses it or another tag names it).
if [ -n "$previous" ] && [ "$previous" != "$id" ] &&
    [ "$(docker image inspect -f '{{len .RepoTags}}' "$previous" 2>/dev/null)" = 0 ]; then
    docker rmi "$previous" >/dev/null 2>&1 || true
fi
echo "built $DROVER_IMAGE ${id:7:12}: $((size / 1024 / 1024)) MiB ($size bytes)"
