"""deploy/ loads: the dashboard is JSON with a query per panel, the alert rules are
Prometheus rules with the four alerts docs/observability.md promises. (That every
metric they name is served is checked against a real scrape in test_metrics.)"""

from __future__ import annotations

from tests.observability.deploy import alert_rules, dashboard_exprs, named_metrics


def test_the_alerts_are_the_four_promised() -> None:
    rules = alert_rules()
    assert [rule["alert"] for rule in rules] == [
        "MinisagaSagaFailed",
        "MinisagaSagasPastDeadline",
        "MinisagaCompensationFailuresRising",
        "MinisagaCommitLatencyHigh",
    ]
    for rule in rules:
        assert rule["expr"] and rule["labels"]["severity"] and rule["annotations"]["summary"]


def test_the_dashboard_queries_minisaga_metrics() -> None:
    assert dashboard_exprs()
    assert all("minisaga_" in expr for expr in dashboard_exprs())
    assert len(named_metrics()) >= 10
