#!/usr/bin/env bash
# Creates the engine service's CA Secret that deploy/snapblock.yaml mounts in the controller:
# snapblock-engine-ca (type kubernetes.io/tls: the CA certificate and its key). The controller
# issues every engine certificate from it: its own (client only) at start, and one per node plugin
# (server and client), for the node that plugin runs on, through CertificateSigningRequests
# (docs/cluster.md, "TLS and identities"). The key is created here and only ever stored in that
# Secret.
#
# usage: deploy/engine-tls.sh [NAMESPACE] [DAYS]   (default snapblock, 3650)
# needs: openssl, kubectl pointing at the cluster.
set -euo pipefail

namespace="${1:-snapblock}"
days="${2:-3650}"

dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
cd "$dir"

# PKCS#8 (openssl 3's default for genpkey) is the key format the controller reads.
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca.key 2>/dev/null
openssl req -x509 -new -key ca.key -days "$days" -subj "/CN=snapblock-engine-ca" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -out ca.crt 2>/dev/null

kubectl -n "$namespace" create secret generic snapblock-engine-ca --type=kubernetes.io/tls \
  --from-file=ca.crt=ca.crt --from-file=tls.crt=ca.crt --from-file=tls.key=ca.key \
  --dry-run=client -o yaml | kubectl apply -f -
echo "engine-tls: Secret snapblock-engine-ca is in namespace $namespace"
