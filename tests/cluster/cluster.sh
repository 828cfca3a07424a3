#!/usr/bin/env bash
# A real single-node Kubernetes cluster as host processes, for netdra's cluster tests: etcd,
# kube-apiserver, kube-controller-manager, kube-scheduler and a kubelet on the project's private
# containerd (tests/e2e/containerd.sh, NRI enabled; 2.4 unless NETDRA_CLUSTER_CONTAINERD says).
# No Docker, no kind, no Kubernetes source in the project: the components are built from the Go
# modules pinned in k8s/<version>/ (k8s.io/kubernetes with each staging module replaced by its
# published version; written by pin.sh).
#
#   cluster.sh setup    build the binaries once per version into the cache (outside the clone)
#   cluster.sh start    certificates, then every component; waits until the node is Ready
#   cluster.sh stop     every component by recorded PID, the kubelet's mounts and cgroups,
#                       containerd (teardown); the run directory is removed
#   cluster.sh status   which components run
#   cluster.sh built    exit status: whether the binaries are in the cache
#   cluster.sh env      KUBECONFIG=…, NODE_NAME=…, API_SERVER=…, the kubelet's directories, CRI
#                       and NRI sockets
#   cluster.sh load ARCHIVE   import an OCI image archive into the node's containerd (as
#                       `kind load image-archive` does), for pods with imagePullPolicy Never
#
# NETDRA_CLUSTER_DIR (default /tmp/netdra-cluster) holds the run; NETDRA_CLUSTER_CACHE the
# binaries (default ~/.cache/netdra/kubernetes-<version>). NETDRA_K8S_VERSION picks the version
# (default below, the one CI runs; scripts/matrix.sh runs the others), one of k8s/*/.
# Root is required (the kubelet, containerd).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
RUN=${NETDRA_CLUSTER_DIR:-/tmp/netdra-cluster}
DEFAULT_VERSION=v1.37.2
VERSION=${NETDRA_K8S_VERSION:-$DEFAULT_VERSION}
MODULE=$HERE/k8s/$VERSION
# The containerd flavor of tests/e2e/containerd.sh the kubelet runs on (2.4: the newest, built
# from its Go module; 2: Debian's 2.1).
CONTAINERD=${NETDRA_CLUSTER_CONTAINERD:-2.4}
CACHE=${NETDRA_CLUSTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/netdra/kubernetes-$VERSION}
BIN=$CACHE/bin
NODE=netdra-node
COMPONENTS="etcd kube-apiserver kube-controller-manager kube-scheduler kubelet"
# Ports away from the defaults, so a cluster already on the machine is not in the way.
ETCD_PORT=23379
ETCD_PEER_PORT=23380
API_PORT=26443
KCM_PORT=20257
SCHED_PORT=20259
KUBELET_PORT=20250
KUBELET_HEALTHZ_PORT=20248
# Every pod's cgroups under one root of ours, removed at stop.
CGROUP_ROOT=/netdra-cluster
# The node's address, on a veth of ours (the kubelet refuses a loopback node IP, and without an
# address the API server cannot reach the kubelet: no `kubectl logs`). Private to this host.
NODE_LINK=ndk8snode
NODE_IP=10.254.254.1

log() { printf '[cluster %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "root is required (the kubelet and containerd)"
[ -f "$MODULE/go.mod" ] || die "Kubernetes $VERSION is not pinned: no $MODULE/go.mod (tests/cluster/pin.sh $VERSION writes it; pinned: $(cd "$HERE/k8s" && echo *))"

go_tool() {
    if command -v go >/dev/null; then command -v go; return; fi
    # Where the machines install Go; the path is not always on PATH.
    if [ -x /usr/local/go/bin/go ]; then echo /usr/local/go/bin/go; return; fi
    die "no Go toolchain (go on PATH or /usr/local/go/bin/go): the components are built from Go modules"
}

setup() {
    if [ -f "$BIN/.complete" ]; then
        log "Kubernetes $VERSION already built in $BIN"
        return
    fi
    local go minor ldflags
    go=$(go_tool)
    minor=$(cut -d. -f2 <<<"$VERSION")
    # The version the components report (the node's kubeletVersion, skew checks): what a release
    # build stamps in with -X.
    ldflags="-s -w"
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        ldflags+=" -X $pkg.gitVersion=$VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
        ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
    done
    mkdir -p "$BIN"
    log "building Kubernetes $VERSION and etcd from Go modules into $BIN ($("$go" version | awk '{print $3}'))"
    (
        cd "$MODULE"
        "$go" build -trimpath -ldflags "$ldflags" -o "$BIN/" \
            k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
            k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubelet
        "$go" build -trimpath -ldflags "-s -w" -o "$BIN/etcd" go.etcd.io/etcd/server/v3
    )
    touch "$BIN/.complete"
    log "built: $(cd "$BIN" && echo *)"
}

pidfile() { echo "$RUN/pids/$1.pid"; }
running() { [ -f "$(pidfile "$1")" ] && kill -0 "$(cat "$(pidfile "$1")")" 2>/dev/null; }

launch() { # NAME, then the command
    local name=$1; shift
    # Its own session: a Ctrl-C meant for a test does not reach it; stop ends it by PID.
    setsid "$@" >> "$RUN/logs/$name.log" 2>&1 < /dev/null &
    echo $! > "$(pidfile "$name")"
}

wait_for() { # COMPONENT, WHAT, SECONDS, then the command that succeeds when ready
    local component=$1 what=$2 deadline=$((SECONDS + $3)); shift 3
    until "$@" >/dev/null 2>&1; do
        if ! running "$component"; then
            tail -5 "$RUN/logs/$component.log" >&2
            die "$component exited while waiting for $what (log: $RUN/logs/$component.log)"
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            tail -5 "$RUN/logs/$component.log" >&2
            die "$what not ready after $3 s (logs: $RUN/logs)"
        fi
        sleep 0.2
    done
}

api() { # PATH: a GET against the API server as the admin
    curl -sf --cacert "$RUN/pki/ca.crt" --cert "$RUN/pki/admin.crt" --key "$RUN/pki/admin.key" \
        "https://127.0.0.1:$API_PORT$1"
}

certificates() {
    local pki=$RUN/pki
    mkdir -p "$pki"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout "$pki/ca.key" -out "$pki/ca.crt" -days 7 \
        -subj "/CN=netdra-cluster-ca" 2>/dev/null
    openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
    openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
    sign() { # NAME, SUBJECT, EXTENSIONS
        openssl req -newkey rsa:2048 -nodes -keyout "$pki/$1.key" -out "$pki/$1.csr" -subj "$2" 2>/dev/null
        printf '%s\n' "$3" > "$pki/$1.ext"
        openssl x509 -req -in "$pki/$1.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
            -out "$pki/$1.crt" -days 7 -extfile "$pki/$1.ext" 2>/dev/null
    }
    sign apiserver "/CN=kube-apiserver" "subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default.svc
extendedKeyUsage=serverAuth"
    sign admin "/O=system:masters/CN=netdra-cluster-admin" "extendedKeyUsage=clientAuth"
    # The API server's identity at the kubelet: pods' logs (`kubectl logs`) go through it.
    sign apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "extendedKeyUsage=clientAuth"
    sign kubelet "/CN=$NODE" "subjectAltName=IP:$NODE_IP,IP:127.0.0.1,DNS:localhost,DNS:$NODE
extendedKeyUsage=serverAuth"
    cat > "$RUN/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: netdra
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority: $pki/ca.crt
users:
- name: admin
  user:
    client-certificate: $pki/admin.crt
    client-key: $pki/admin.key
contexts:
- name: netdra
  context: {cluster: netdra, user: admin}
current-context: netdra
EOF
}

kubelet_config() {
    cat > "$RUN/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
tlsCertFile: $RUN/pki/kubelet.crt
tlsPrivateKeyFile: $RUN/pki/kubelet.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $RUN/pki/ca.crt}
authorization: {mode: AlwaysAllow}
containerRuntimeEndpoint: unix://$CRI_SOCKET
# The private containerd's runc uses cgroupfs; these machines have cgroup v1.
cgroupDriver: cgroupfs
cgroupRoot: $CGROUP_ROOT
failCgroupV1: false
failSwapOn: false
podLogsDir: $RUN/pod-logs
resolvConf: ""
# The test's images are local (imagePullPolicy: Never); never collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "50Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
syncFrequency: 10s
fileCheckFrequency: 5s
EOF
}

start() {
    [ -f "$BIN/.complete" ] || die "not built: run '$0 setup' first"
    if running kube-apiserver; then log "already running in $RUN"; print_env; return; fi
    rm -rf "$RUN"
    mkdir -p "$RUN/pids" "$RUN/logs" "$RUN/etcd" "$RUN/kubelet" "$RUN/pod-logs"
    # A start that fails stops what it started (its error and log tail are printed above).
    trap 'status=$?; if [ "$status" != 0 ]; then log "start failed; stopping what was started"; stop; fi' EXIT
    local env
    env=$(bash "$ROOT/tests/e2e/containerd.sh" start "$CONTAINERD")
    CRI_SOCKET=$(sed -n 's/^CRI_SOCKET=//p' <<<"$env")
    NRI_SOCKET=$(sed -n 's/^NRI_SOCKET=//p' <<<"$env")
    CDI_DIR=$(sed -n 's/^CDI_DIR=//p' <<<"$env")
    printf 'CRI_SOCKET=%s\nNRI_SOCKET=%s\nCDI_DIR=%s\n' "$CRI_SOCKET" "$NRI_SOCKET" "$CDI_DIR" > "$RUN/containerd.env"
    certificates
    kubelet_config
    node_address

    # Shared NICs (consumable capacity, KEP-5075: alpha in 1.34 and 1.35, beta and on by
    # default from 1.36) need the gate turned on in the older versions' components.
    local gates=()
    if [ "$(cut -d. -f2 <<<"$VERSION")" -lt 36 ]; then
        gates=(--feature-gates=DRAConsumableCapacity=true)
    fi

    launch etcd "$BIN/etcd" --name netdra --data-dir "$RUN/etcd" \
        --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
        --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-cluster "netdra=http://127.0.0.1:$ETCD_PEER_PORT" --listen-metrics-urls "" --log-level warn
    wait_for etcd etcd 30 curl -sf "http://127.0.0.1:$ETCD_PORT/health"

    # No endpoint reconciler: the `kubernetes` Service would advertise 127.0.0.1, which 1.37
    # refuses ("may not be in the loopback range"); nothing here reaches the API through it.
    launch kube-apiserver "$BIN/kube-apiserver" --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
        --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --endpoint-reconciler-type none \
        --secure-port "$API_PORT" \
        --tls-cert-file "$RUN/pki/apiserver.crt" --tls-private-key-file "$RUN/pki/apiserver.key" \
        --client-ca-file "$RUN/pki/ca.crt" --service-account-issuer https://kubernetes.default.svc \
        --kubelet-client-certificate "$RUN/pki/apiserver-kubelet-client.crt" \
        --kubelet-client-key "$RUN/pki/apiserver-kubelet-client.key" \
        --kubelet-preferred-address-types InternalIP \
        --service-account-key-file "$RUN/pki/sa.pub" --service-account-signing-key-file "$RUN/pki/sa.key" \
        --service-cluster-ip-range 10.0.0.0/24 --authorization-mode Node,RBAC --allow-privileged=true "${gates[@]}"
    wait_for kube-apiserver kube-apiserver 60 api /readyz

    launch kube-controller-manager "$BIN/kube-controller-manager" --kubeconfig "$RUN/kubeconfig" \
        --authentication-kubeconfig "$RUN/kubeconfig" --authorization-kubeconfig "$RUN/kubeconfig" \
        --bind-address 127.0.0.1 --secure-port "$KCM_PORT" --leader-elect=false \
        --service-account-private-key-file "$RUN/pki/sa.key" --root-ca-file "$RUN/pki/ca.crt" \
        --use-service-account-credentials=false "${gates[@]}"
    launch kube-scheduler "$BIN/kube-scheduler" --kubeconfig "$RUN/kubeconfig" \
        --authentication-kubeconfig "$RUN/kubeconfig" --authorization-kubeconfig "$RUN/kubeconfig" \
        --bind-address 127.0.0.1 --secure-port "$SCHED_PORT" --leader-elect=false "${gates[@]}"
    shared_netns_dir
    # The kubelet wants its cgroup root to exist in every hierarchy.
    for hierarchy in /sys/fs/cgroup/*/; do
        mkdir -p "$hierarchy${CGROUP_ROOT#/}"
    done
    launch kubelet "$BIN/kubelet" --config "$RUN/kubelet.yaml" --kubeconfig "$RUN/kubeconfig" \
        --root-dir "$RUN/kubelet" --hostname-override "$NODE" --node-ip "$NODE_IP" -v 4 "${gates[@]}"
    wait_for kubelet "node $NODE Ready" 120 node_ready
    wait_for kube-controller-manager "the default ServiceAccount" 60 api /api/v1/namespaces/default/serviceaccounts/default
    trap - EXIT
    log "Kubernetes $VERSION running in $RUN (node $NODE)"
    print_env
}

# Pods' network namespaces are bind mounts under /run/netns, which a DaemonSet pod (netdra's
# agent) sees through a HostToContainer (rslave) mount: namespaces made after it started reach
# it only when the directory is a shared mount, as on a node whose init makes / shared. `ip
# netns` makes it so the same way; a mount made here is undone at stop.
shared_netns_dir() {
    mkdir -p /run/netns
    if ! mountpoint -q /run/netns; then
        mount --bind /run/netns /run/netns
        touch "$RUN/netns-mount"
    else
        # An existing mount's propagation is put back at stop.
        findmnt -no PROPAGATION /run/netns > "$RUN/netns-propagation"
    fi
    mount --make-shared /run/netns
}

node_address() {
    ip link del "$NODE_LINK" 2>/dev/null || true
    ip link add "$NODE_LINK" type veth peer name "${NODE_LINK}p"
    ip addr add "$NODE_IP/32" dev "$NODE_LINK"
    ip link set "$NODE_LINK" up
    ip link set "${NODE_LINK}p" up
}

node_ready() {
    api "/api/v1/nodes/$NODE" | python3 -c '
import json, sys
conditions = json.load(sys.stdin).get("status", {}).get("conditions", [])
sys.exit(0 if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions) else 1)'
}

print_env() {
    cat "$RUN/containerd.env"
    printf 'KUBECONFIG=%s\nNODE_NAME=%s\nAPI_SERVER=%s\nKUBELET_ROOT=%s\nKUBELET_LOG=%s\nKUBERNETES_VERSION=%s\nCONTAINERD=%s\n' \
        "$RUN/kubeconfig" "$NODE" "127.0.0.1:$API_PORT" "$RUN/kubelet" "$RUN/logs/kubelet.log" "$VERSION" "$CONTAINERD"
}

# Pods the test left (it failed midway): deleted through the API while the kubelet still runs,
# so their sandboxes are stopped and their namespaces removed the normal way.
drain() {
    running kube-apiserver && running kubelet || return 0
    local namespaces ns
    namespaces=$(api /api/v1/pods | python3 -c '
import json, sys
print(" ".join(sorted({p["metadata"]["namespace"] for p in json.load(sys.stdin)["items"]})))') || return 0
    [ -n "$namespaces" ] || return 0
    for ns in $namespaces; do
        # DaemonSets first (a Helm release a failed test left): they would recreate their pods.
        curl -sf -X DELETE --cacert "$RUN/pki/ca.crt" --cert "$RUN/pki/admin.crt" --key "$RUN/pki/admin.key" \
            "https://127.0.0.1:$API_PORT/apis/apps/v1/namespaces/$ns/daemonsets" >/dev/null || true
        curl -sf -X DELETE --cacert "$RUN/pki/ca.crt" --cert "$RUN/pki/admin.crt" --key "$RUN/pki/admin.key" \
            "https://127.0.0.1:$API_PORT/api/v1/namespaces/$ns/pods?gracePeriodSeconds=1" >/dev/null || true
    done
    # A pod whose DRA driver is gone cannot finish terminating (the kubelet keeps retrying the
    # unprepare); after 20 s it is removed from the API, and the kubelet still stops its sandbox.
    local deadline=$((SECONDS + 20)) count
    while count=$(api /api/v1/pods | python3 -c 'import json, sys; print(len(json.load(sys.stdin)["items"]))') \
        && [ "$count" != 0 ]; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            for ns in $namespaces; do
                curl -sf -X DELETE --cacert "$RUN/pki/ca.crt" --cert "$RUN/pki/admin.crt" --key "$RUN/pki/admin.key" \
                    "https://127.0.0.1:$API_PORT/api/v1/namespaces/$ns/pods?gracePeriodSeconds=0" >/dev/null || true
            done
            sleep 3
            log "pods force-deleted after 20 s"
            return 0
        fi
        sleep 0.5
    done
    log "deleted the pods left behind ($namespaces)"
}

stop() {
    drain
    local name pid i reversed=""
    for name in $COMPONENTS; do reversed="$name $reversed"; done
    for name in $reversed; do
        running "$name" || continue
        pid=$(cat "$(pidfile "$name")")
        kill -TERM "$pid"
        for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; fi
        log "$name stopped (pid $pid)"
    done
    # Pods the kubelet left: containerd's teardown stops them and ends their shims.
    bash "$ROOT/tests/e2e/containerd.sh" teardown "$CONTAINERD" || true
    # Volume mounts of pods the kubelet did not get to clean up, under our own directory only.
    if [ -d "$RUN/kubelet" ]; then
        awk -v root="$RUN/kubelet" '$5 == root || index($5, root "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r |
            while read -r mount; do umount "$mount" 2>/dev/null || umount -l "$mount" || true; done
    fi
    # Its peer goes with it.
    ip link del "$NODE_LINK" 2>/dev/null || true
    if [ -f "$RUN/netns-mount" ]; then
        umount /run/netns 2>/dev/null ||
            log "WARNING: /run/netns has mounts made under it since the start; the bind mount the start made there is left"
    elif [ -f "$RUN/netns-propagation" ]; then
        case "$(cat "$RUN/netns-propagation")" in
            private | slave | unbindable) mount --make-"$(cat "$RUN/netns-propagation")" /run/netns ;;
        esac
    fi
    # The kubelet's cgroups, deepest first, under the root the config named.
    for hierarchy in /sys/fs/cgroup/*/; do
        [ -d "$hierarchy${CGROUP_ROOT#/}" ] || continue
        find "$hierarchy${CGROUP_ROOT#/}" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    done
    rm -rf "$RUN"
}

status() {
    local name
    for name in $COMPONENTS; do
        if running "$name"; then echo "$name running (pid $(cat "$(pidfile "$name")"))"; else echo "$name stopped"; fi
    done
}

case "${1:-}" in
    setup) setup ;;
    start) start ;;
    stop) stop ;;
    status) status ;;
    built) [ -f "$BIN/.complete" ] ;;
    env) print_env ;;
    load)
        [ -f "${2:-}" ] || die "load: no image archive '${2:-}'"
        bash "$ROOT/tests/e2e/containerd.sh" import "$CONTAINERD" "$2"
        ;;
    *) die "usage: $0 setup|start|stop|status|built|env|load ARCHIVE" ;;
esac
