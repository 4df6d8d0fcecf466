#!/usr/bin/env python3
"""Render the pitstop chart's ServiceAccount and RBAC objects as multi-document YAML.

Used by the real-apiserver end-to-end test (e2e/tests/kube_e2e.rs), which creates these
objects in its test namespace and runs the controller with a token of that ServiceAccount,
so the controller gets exactly the permissions the chart grants, no more.

The chart is rendered in-process by the real Helm v4 engine (PyPI `helm-python-sdk`, as in
charts/tests), exactly as `helm install` would, with `watchNamespace` and the release
namespace both set to the given namespace unless told otherwise.

    .venv/bin/python e2e/scripts/render-chart.py --namespace pitstop-e2e-1234
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import helm_python as helm
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = ROOT / "charts" / "pitstop"
RBAC_KINDS = ("ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--namespace", required=True, help="release namespace")
    parser.add_argument("--watch-namespace", default=None,
                        help="the chart's watchNamespace (default: the release namespace; "
                             "pass an empty string for cluster-wide RBAC)")
    parser.add_argument("--release", default="pitstop", help="release name (default: pitstop)")
    parser.add_argument("--chart", type=Path, default=CHART_DIR, help="chart directory")
    args = parser.parse_args()

    watch = args.namespace if args.watch_namespace is None else args.watch_namespace
    values = {"watchNamespace": watch}
    with helm.Chart.load(args.chart) as chart:
        manifests = chart.render(values, name=args.release, namespace=args.namespace,
                                 is_install=True)

    objects = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if isinstance(doc, dict) and doc.get("kind") in RBAC_KINDS:
                objects.append(doc)
    if not any(o["kind"] == "ServiceAccount" for o in objects):
        print("render-chart: the chart rendered no ServiceAccount", file=sys.stderr)
        return 1
    yaml.safe_dump_all(objects, sys.stdout, sort_keys=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
