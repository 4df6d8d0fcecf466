#!/usr/bin/env bash
# Copy the generated CRDs (crds/maintenanceplan.yaml and crds/maintenancepolicy.yaml, from
# `pitstop crd plan|policy`) into the chart, which Helm installs from charts/pitstop/crds/.
# charts/tests/test_chart.py fails when they differ.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
for name in maintenanceplan maintenancepolicy; do
  src="$root/crds/$name.yaml"
  dst="$root/charts/pitstop/crds/$name.yaml"
  if [[ ! -f "$src" ]]; then
    echo "sync-crd: $src is missing; generate it first (make crds)" >&2
    exit 1
  fi
  mkdir -p "$(dirname "$dst")"
  cp "$src" "$dst"
  echo "sync-crd: copied crds/$name.yaml to charts/pitstop/crds/"
done
