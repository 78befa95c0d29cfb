"""The metrics that deploy/'s Grafana dashboard and Prometheus alerts name."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARD = DEPLOY / "grafana-dashboard.json"
ALERTS = DEPLOY / "prometheus-alerts.yml"
_METRIC = re.compile(r"\bminisaga_[a-z_]+\b")


def alert_rules() -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = [
        rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]
    ]
    return rules


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def named_metrics() -> dict[str, set[str]]:
    """Each metric (sample) name the files use, and where."""
    found: dict[str, set[str]] = {}
    for expr in dashboard_exprs():
        for name in _METRIC.findall(expr):
            found.setdefault(name, set()).add(DASHBOARD.name)
    for rule in alert_rules():
        for name in _METRIC.findall(rule["expr"]):
            found.setdefault(name, set()).add(f"{ALERTS.name}: {rule['alert']}")
    return found
