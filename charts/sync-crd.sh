#!/usr/bin/env bash
# Copy the generated CRD (crds/maintenanceplan.yaml, from `pitstop crd`) into the chart, which
# Helm installs from charts/pitstop/crds/. charts/tests/test_chart.py fails when they differ.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
src="$root/crds/maintenanceplan.yaml"
dst="$root/charts/pitstop/crds/maintenanceplan.yaml"
if [[ ! -f "$src" ]]; then
  echo "sync-crd: $src is missing; generate it first (make crds)" >&2
  exit 1
fi
mkdir -p "$(dirname "$dst")"
cp "$src" "$dst"
echo "sync-crd: copied crds/maintenanceplan.yaml to charts/pitstop/crds/"
