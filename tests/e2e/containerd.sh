#!/usr/bin/env bash
# A private containerd with NRI, CRI, runc and CNI for netdra's end-to-end tests, without a
# registry and without touching the system's apt sources or containerd configuration.
#
#   containerd.sh setup               install runc/gcc (apt), fetch containerd 1.7 (Debian trixie)
#                                     and 2.1 (Debian sid) plus CNI plugins with private apt lists,
#                                     extract them under $NETDRA_E2E_DIR, build the pause image
#                                     and a busybox image (localhost/busybox:netdra, a shell);
#                                     build containerd 2.4 from its Go module (see `build`)
#   containerd.sh build   FLAVOR      build containerd FLAVOR (2.2, 2.3 or 2.4) from its Go module,
#                                     pinned below, once per version into the cache outside the
#                                     clone ($NETDRA_CONTAINERD_CACHE, default
#                                     ~/.cache/netdra/containerd-<version>)
#   containerd.sh start   FLAVOR      start containerd FLAVOR (1.7, 2, 2.2, 2.3 or 2.4; 2 is the
#                                     Debian-packaged 2.1); prints its environment
#   containerd.sh stop    FLAVOR      stop it (by recorded PID); running pods survive in their shims
#   containerd.sh restart FLAVOR      stop, then start (the NRI socket is recreated)
#   containerd.sh teardown FLAVOR     stop it, end the shims it left (by recorded PID files), drop its state
#   containerd.sh env     FLAVOR      print CRI_SOCKET=..., NRI_SOCKET=..., CDI_DIR=... (the CDI
#                                     spec directory it reads)
#   containerd.sh import  FLAVOR ARCHIVE  import an OCI image archive into its CRI image store
#
# Everything lives in $NETDRA_E2E_DIR (default /tmp/netdra-e2e). Root is required.
set -euo pipefail

E2E=${NETDRA_E2E_DIR:-/tmp/netdra-e2e}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
log() { printf '[e2e %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# The containerd releases built from their Go module (github.com/containerd/containerd/v2), by
# flavor; each names the NRI version it vendors in the tests' output (Configure).
go_version_of() {
    case "$1" in
        2.2) echo v2.2.9 ;;
        2.3) echo v2.3.7 ;;
        2.4) echo v2.4.2 ;;
        *) die "containerd $1 is not built from its Go module (use 2.2, 2.3 or 2.4)" ;;
    esac
}

flavor_vars() {
    GO_VERSION=
    case "${1:-}" in
        1.7) CONFIG_VERSION=2; SUBNET=10.244.17.0/24 ;;
        2) CONFIG_VERSION=3; SUBNET=10.244.20.0/24 ;;
        2.2) CONFIG_VERSION=3; SUBNET=10.244.22.0/24 ;;
        2.3) CONFIG_VERSION=3; SUBNET=10.244.23.0/24 ;;
        2.4) CONFIG_VERSION=3; SUBNET=10.244.24.0/24 ;;
        *) die "unknown flavor '${1:-}' (use 1.7, 2, 2.2, 2.3 or 2.4)" ;;
    esac
    FLAVOR=$1
    DIR=$E2E/ctrd-$FLAVOR
    BIN=$DIR/root/usr/bin
    case "$FLAVOR" in
        2.2 | 2.3 | 2.4)
            GO_VERSION=$(go_version_of "$FLAVOR")
            CACHE=${NETDRA_CONTAINERD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/netdra/containerd-$GO_VERSION}
            BIN=$CACHE/bin
            ;;
    esac
    CRI_SOCKET=$DIR/run/containerd.sock
    NRI_SOCKET=$DIR/run/nri.sock
    PIDFILE=$DIR/containerd.pid
}

# The Debian archive this machine's apt already uses: the first URI of a source that serves the
# release's own suite (e.g. bookworm), from deb822 `.sources` files or one-line `.list` files.
# The same archive serves trixie and sid. No host is named here, so the script works wherever
# apt does.
debian_mirror() {
    local codename uri
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    [ -n "$codename" ] || die "no VERSION_CODENAME in /etc/os-release"
    uri=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk -v want="$codename" '
        function flush() { if (!found && uris != "" && suites ~ ("(^| )" want "( |$)")) { print uris; found = 1 } uris = ""; suites = "" }
        /^[ \t]*#/ { next }
        /^[ \t]*$/ { flush(); next }
        tolower($1) == "uris:" { uris = $2 }
        tolower($1) == "suites:" { $1 = ""; suites = $0; sub(/^ +/, "", suites) }
        END { flush() }')
    if [ -z "$uri" ]; then
        uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | awk -v want="$codename" '
            $1 == "deb" { i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ } if ($(i + 1) == want) { print $i; exit } }')
    fi
    [ -n "$uri" ] || die "no apt source for Debian $codename in /etc/apt (needed to fetch containerd from trixie and sid)"
    echo "$uri"
}

apt_private() { # SUITE, then apt-get arguments
    local suite=$1; shift
    local a=$E2E/apt/$suite
    mkdir -p "$a/lists/partial" "$a/cache/archives/partial" "$a/parts"
    cat > "$a/parts/netdra-e2e.sources" <<EOF
Types: deb
URIs: $(debian_mirror)
Suites: $suite
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    apt-get -o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts="$a/parts" \
        -o Dir::State::Lists="$a/lists" -o Dir::Cache="$a/cache" "$@"
}

fetch_suite() { # SUITE DEST PACKAGES...
    local suite=$1 dest=$2; shift 2
    apt_private "$suite" update -qq
    local debs=$E2E/debs/$suite
    mkdir -p "$debs" "$dest"
    local pkg
    for pkg in "$@"; do
        (cd "$debs" && apt_private "$suite" download -qq "$pkg/$suite" 2>&1 | grep -v 'Download is performed unsandboxed' || true)
    done
    local deb
    for deb in "$debs"/*.deb; do dpkg -x "$deb" "$dest"; done
    # Only bookworm's runc runs on this glibc; never pick up a newer one from the suite.
    rm -f "$dest/usr/sbin/runc" "$dest/usr/bin/runc"
}

go_tool() {
    if command -v go >/dev/null; then command -v go; return; fi
    # Where the machines install Go; the path is not always on PATH.
    if [ -x /usr/local/go/bin/go ]; then echo /usr/local/go/bin/go; return; fi
    die "no Go toolchain (go on PATH or /usr/local/go/bin/go): containerd $FLAVOR is built from its Go module"
}

# containerd, its runc shim and ctr from the module at $GO_VERSION, as the project's Makefile
# builds them (the shim without cgo and gRPC), through the Go module proxy the machine's Go is
# configured with; the version is stamped in as a release build does.
build() {
    if [ -f "$BIN/.complete" ]; then log "containerd $GO_VERSION already built in $BIN"; return; fi
    local go module=github.com/containerd/containerd/v2
    go=$(go_tool)
    mkdir -p "$BIN"
    log "building containerd $GO_VERSION from its Go module into $BIN ($("$go" version | awk '{print $3}'))"
    local ldflags="-s -w -X $module/version.Version=$GO_VERSION -X $module/version.Package=$module"
    GOBIN=$BIN "$go" install -trimpath -tags urfave_cli_no_docs -ldflags "$ldflags" \
        "$module/cmd/containerd@$GO_VERSION" "$module/cmd/ctr@$GO_VERSION"
    GOBIN=$BIN CGO_ENABLED=0 "$go" install -trimpath -tags "urfave_cli_no_docs no_grpc" -ldflags "$ldflags" \
        "$module/cmd/containerd-shim-runc-v2@$GO_VERSION"
    touch "$BIN/.complete"
    log "built: $("$BIN/containerd" --version)"
}

setup() {
    [ "$(id -u)" = 0 ] || die "root is required"
    # The newest containerd runs in the tests too; the matrix builds the others on demand.
    (flavor_vars 2.4 && build)
    if [ -f "$E2E/ready" ]; then busybox_image; log "already set up in $E2E"; return; fi
    mkdir -p "$E2E"
    log "apt: runc, gcc, iproute2 (bookworm)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        runc gcc libc6-dev iproute2 debian-archive-keyring >/dev/null
    log "containerd 1.7 and CNI plugins from trixie (private apt lists)"
    fetch_suite trixie "$E2E/ctrd-1.7/root" containerd containernetworking-plugins
    log "containerd 2.1 from sid (private apt lists)"
    fetch_suite sid "$E2E/ctrd-2/root" containerd
    [ -x "$E2E/ctrd-1.7/root/usr/bin/containerd" ] || die "containerd 1.7 was not extracted"
    [ -x "$E2E/ctrd-2/root/usr/bin/containerd" ] || die "containerd 2 was not extracted"
    [ -x "$E2E/ctrd-1.7/root/usr/lib/cni/ptp" ] || die "CNI plugins were not extracted"
    log "containerd: $("$E2E/ctrd-1.7/root/usr/bin/containerd" --version) / $("$E2E/ctrd-2/root/usr/bin/containerd" --version)"
    log "pause image"
    mkdir -p "$E2E/pause"
    gcc -static -Os -s -o "$E2E/pause/pause" "$HERE/pause.c"
    python3 "$ROOT/scripts/mkimage.py" "$E2E/pause/pause.tar" localhost/pause:netdra /pause "$E2E/pause/pause:/pause"
    busybox_image
    rm -rf "$E2E/debs"
    touch "$E2E/ready"
}

# A shell for the tests' workloads (read a file, run `ip` inside a container): Debian's static
# busybox, from the system's apt sources, in a one-file image written as the pause image is.
busybox_image() {
    local d=$E2E/busybox
    [ -f "$d/busybox.tar" ] && return
    log "busybox image"
    rm -rf "$d" && mkdir -p "$d/deb"
    (cd "$d/deb" && apt-get download -qq busybox-static 2>&1 | grep -v 'Download is performed unsandboxed' || true)
    local deb
    for deb in "$d"/deb/busybox-static_*.deb; do dpkg -x "$deb" "$d/root"; done
    [ -x "$d/root/bin/busybox" ] || die "busybox-static did not give bin/busybox"
    python3 "$ROOT/scripts/mkimage.py" "$d/busybox.tar.part" localhost/busybox:netdra /bin/busybox \
        "$d/root/bin/busybox:/bin/busybox" --cmd sh
    mv "$d/busybox.tar.part" "$d/busybox.tar"
    rm -rf "$d/deb" "$d/root"
}

write_config() {
    mkdir -p "$DIR/run" "$DIR/cni-conf" "$DIR/nri-plugins" "$DIR/nri-conf" "$DIR/podlogs" "$DIR/cdi"
    cat > "$DIR/cni-conf/10-netdra-e2e.conflist" <<EOF
{"cniVersion":"1.0.0","name":"netdra-e2e-$FLAVOR","plugins":[{"type":"ptp","ipMasq":false,"mtu":1500,
 "ipam":{"type":"host-local","dataDir":"$DIR/cni-ipam","ranges":[[{"subnet":"$SUBNET"}]]}}]}
EOF
    local cni_bin=$E2E/ctrd-1.7/root/usr/lib/cni
    if [ "$CONFIG_VERSION" = 2 ]; then
        cat > "$DIR/config.toml" <<EOF
version = 2
root = "$DIR/root-state"
state = "$DIR/state"
[grpc]
  address = "$CRI_SOCKET"
[ttrpc]
  address = "$CRI_SOCKET.ttrpc"
[plugins."io.containerd.nri.v1.nri"]
  disable = false
  socket_path = "$NRI_SOCKET"
  plugin_path = "$DIR/nri-plugins"
  plugin_config_path = "$DIR/nri-conf"
  plugin_registration_timeout = "5s"
  plugin_request_timeout = "2s"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/pause:netdra"
  restrict_oom_score_adj = true
  enable_cdi = true
  cdi_spec_dirs = ["$DIR/cdi"]
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "/usr/sbin/runc"
        Root = "$DIR/runc"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$cni_bin"
    conf_dir = "$DIR/cni-conf"
EOF
    else
        cat > "$DIR/config.toml" <<EOF
version = 3
root = "$DIR/root-state"
state = "$DIR/state"
[grpc]
  address = "$CRI_SOCKET"
[ttrpc]
  address = "$CRI_SOCKET.ttrpc"
[plugins.'io.containerd.nri.v1.nri']
  disable = false
  socket_path = "$NRI_SOCKET"
  plugin_path = "$DIR/nri-plugins"
  plugin_config_path = "$DIR/nri-conf"
  plugin_registration_timeout = "5s"
  plugin_request_timeout = "2s"
[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "localhost/pause:netdra"
[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = true
  enable_cdi = true
  cdi_spec_dirs = ["$DIR/cdi"]
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "/usr/sbin/runc"
        Root = "$DIR/runc"
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["$cni_bin"]
    conf_dir = "$DIR/cni-conf"
EOF
    fi
}

running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

start() {
    [ -f "$E2E/ready" ] || die "not set up: run '$0 setup' first"
    [ -z "$GO_VERSION" ] || [ -f "$BIN/.complete" ] || die "containerd $FLAVOR is not built: run '$0 build $FLAVOR' first"
    if running; then log "containerd $FLAVOR already running (pid $(cat "$PIDFILE"))"; print_env; return; fi
    write_config
    # Sockets a containerd that died left behind would pass the wait below before it serves.
    rm -f "$NRI_SOCKET" "$CRI_SOCKET" "$CRI_SOCKET.ttrpc"
    # Its own session: a Ctrl-C or SIGTERM meant for the test or the demo does not reach it.
    PATH=$BIN:$PATH setsid nohup "$BIN/containerd" --config "$DIR/config.toml" >> "$DIR/containerd.log" 2>&1 &
    echo $! > "$PIDFILE"
    local i
    for i in $(seq 100); do
        [ -S "$NRI_SOCKET" ] && [ -S "$CRI_SOCKET" ] && break
        running || { tail -20 "$DIR/containerd.log" >&2; die "containerd $FLAVOR exited during start"; }
        sleep 0.1
    done
    [ -S "$NRI_SOCKET" ] || { tail -20 "$DIR/containerd.log" >&2; die "containerd $FLAVOR did not create $NRI_SOCKET"; }
    "$BIN/ctr" -a "$CRI_SOCKET" -n k8s.io images import "$E2E/pause/pause.tar" >/dev/null
    [ -f "$E2E/busybox/busybox.tar" ] || die "no busybox image: run '$0 setup' again"
    "$BIN/ctr" -a "$CRI_SOCKET" -n k8s.io images import "$E2E/busybox/busybox.tar" >/dev/null
    log "containerd $FLAVOR running (pid $(cat "$PIDFILE"), $("$BIN/containerd" --version | awk '{print $3}'))"
    print_env
}

stop() {
    if ! running; then rm -f "$PIDFILE"; return; fi
    local pid i
    pid=$(cat "$PIDFILE")
    kill -TERM "$pid"
    for i in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; sleep 0.2; fi
    rm -f "$PIDFILE"
    log "containerd $FLAVOR stopped (pid $pid)"
}

teardown() {
    stop
    # Shims outlive containerd; each recorded its PID in the state directory.
    local f pid
    for f in "$DIR"/state/io.containerd.runtime.v2.task/*/*/shim.pid; do
        [ -f "$f" ] || continue
        pid=$(cat "$f")
        kill -KILL "$pid" 2>/dev/null && log "ended leftover shim pid $pid ($f)"
    done
    # A shim without that file (2.1.9 leaves one sandbox's shim so, about once per test run)
    # still works in its task directory under our state: found by its working directory, its
    # sandbox's processes (its children) ended with it.
    local proc cwd child
    for proc in /proc/[0-9]*; do
        cwd=$(readlink "$proc/cwd" 2>/dev/null) || continue
        case "$cwd" in
            "$DIR/state/io.containerd.runtime.v2.task/"*)
                pid=${proc#/proc/}
                for child in $(ps --ppid "$pid" -o pid= 2>/dev/null); do kill -KILL "$child" 2>/dev/null || true; done
                kill -KILL "$pid" 2>/dev/null && log "ended leftover shim pid $pid (working in $cwd)"
                ;;
        esac
    done
    # Mounts (sandbox rootfs, shm) that containerd made under our own directory.
    local m
    for m in $(awk -v d="$DIR/" 'index($2, d) == 1 {print $2}' /proc/self/mounts | sort -r); do
        umount -l "$m" && log "unmounted leftover $m"
    done
    # Its metadata and state go too: each run starts from nothing (the pause image is imported
    # at every start). Kept, it can stop the next start: containerd 2.1.9 keeps the record of a
    # sandbox whose NRI RunPodSandbox failed, and when the kubelet's retry reused its name it
    # refuses to recover ("failed to reserve sandbox name … is reserved for …").
    rm -rf "$DIR/root-state" "$DIR/state"
}

print_env() { printf 'CRI_SOCKET=%s\nNRI_SOCKET=%s\nCDI_DIR=%s\n' "$CRI_SOCKET" "$NRI_SOCKET" "$DIR/cdi"; }

cmd=${1:-}
case "$cmd" in
    setup) setup ;;
    import)
        flavor_vars "${2:-}"
        [ -f "${3:-}" ] || die "import: no image archive '${3:-}'"
        running || die "import: containerd $FLAVOR is not running"
        # The CRI plugin's namespace: what the kubelet's pods are made from.
        "$BIN/ctr" -a "$CRI_SOCKET" -n k8s.io images import "$3" >&2
        ;;
    start | stop | restart | teardown | env | build)
        flavor_vars "${2:-}"
        case "$cmd" in
            build) [ -n "$GO_VERSION" ] || die "containerd $FLAVOR is not built from its Go module (use 2.2, 2.3 or 2.4)"; build ;;
            start) start ;;
            stop) stop ;;
            restart) stop; start ;;
            teardown) teardown ;;
            env) print_env ;;
        esac
        ;;
    *) die "usage: $0 setup | build|start|stop|restart|teardown|env FLAVOR | import FLAVOR ARCHIVE" ;;
esac
