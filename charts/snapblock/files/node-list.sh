#!/bin/sh
# Writes the controller's --nodes-file ("node-id=host:port" per line) from the node plugin pods,
# until the snapblock binary discovers node engines from Kubernetes itself. The file is replaced
# atomically (write then rename), so the controller never reads half a list; when the API server
# cannot be reached the last list stays (the controller keeps the nodes it knows).
set -eu

sa=/var/run/secrets/kubernetes.io/serviceaccount
api="https://${KUBERNETES_SERVICE_HOST}:${KUBERNETES_SERVICE_PORT}"
out="${NODES_FILE}"

while true; do
  if curl -fsS --max-time 20 --cacert "$sa/ca.crt" \
    -H "Authorization: Bearer $(cat "$sa/token")" \
    -G --data-urlencode "labelSelector=${NODE_SELECTOR}" \
    "$api/api/v1/namespaces/${POD_NAMESPACE}/pods" |
    jq -r --arg port "${ENGINE_PORT}" '
      .items[]
      | select(.status.phase == "Running" and .spec.nodeName != null and .status.podIP != null)
      | (if (.status.podIP | contains(":")) then "[\(.status.podIP)]" else .status.podIP end) as $ip
      | "\(.spec.nodeName)=\($ip):\($port)"' >"$out.tmp"; then
    mv "$out.tmp" "$out"
  else
    echo "node-list: cannot list the node plugin pods; keeping the previous list" >&2
  fi
  sleep "${INTERVAL}"
done
