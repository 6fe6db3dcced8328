#!/usr/bin/env bash
# Creates the engine service's mutual-TLS Secrets that deploy/snapblock.yaml mounts:
# snapblock-controller-tls (client) and snapblock-node-tls (server, shared by every node plugin,
# carrying the name the controller checks: snapblock-node.snapblock.svc). One CA signs both; its
# key is deleted afterwards (make new certificates by running this again and restarting the pods).
#
# usage: deploy/engine-tls.sh [NAMESPACE] [DAYS]   (default snapblock, 3650)
# needs: openssl, kubectl pointing at the cluster.
set -euo pipefail

namespace="${1:-snapblock}"
days="${2:-3650}"
node_name="snapblock-node.${namespace}.svc"

dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
cd "$dir"

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days "$days" \
  -subj "/CN=snapblock-engine-ca" -keyout ca.key -out ca.crt 2>/dev/null

issue() { # issue NAME CN SAN EXTENDED_KEY_USAGE
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$2" \
    -keyout "$1.key" -out "$1.csr" 2>/dev/null
  printf 'subjectAltName=DNS:%s\nextendedKeyUsage=%s\nkeyUsage=digitalSignature,keyEncipherment\n' "$3" "$4" >"$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days "$days" \
    -extfile "$1.ext" -out "$1.crt" 2>/dev/null
}
issue controller snapblock-controller snapblock-controller clientAuth,serverAuth
issue node "$node_name" "$node_name" serverAuth,clientAuth

for side in controller node; do
  kubectl -n "$namespace" create secret generic "snapblock-$side-tls" --type=kubernetes.io/tls \
    --from-file=ca.crt=ca.crt --from-file=tls.crt="$side.crt" --from-file=tls.key="$side.key" \
    --dry-run=client -o yaml | kubectl apply -f -
done
echo "engine-tls: Secrets snapblock-controller-tls and snapblock-node-tls are in namespace $namespace"
