"""The monitoring assets in deploy/ only query metrics and labels the code actually exposes."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from shared.metrics import Metrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
DASHBOARD = DEPLOY / "grafana" / "memberflow-dashboard.json"

METRIC_NAME = re.compile(r"\bmemberflow_[a-z0-9_]+")
SELECTOR = re.compile(r"\b(memberflow_[a-z0-9_]+)\{([^}]*)\}")
MATCHER_LABEL = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
TARGET_LABELS = {"instance", "job", "role", "process"}  # added by Prometheus / prometheus.yml

SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}


def exposed() -> dict[str, set[str]]:
    """Every sample name `Metrics` can expose, with the labels it carries."""
    metrics = Metrics()
    labels_of = {
        c._name: set(c._labelnames)  # the declared label names; no public accessor exists
        for c in vars(metrics).values() if isinstance(c, MetricWrapperBase)
    }
    names: dict[str, set[str]] = {}
    for family in metrics.registry.collect():
        labels = labels_of[family.name]
        for suffix in SUFFIXES[family.type]:
            names[family.name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return names


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return doc


def panel_queries() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]


def all_queries() -> list[str]:
    return [r["expr"] for r in alert_rules()] + panel_queries()


def test_every_queried_metric_is_exposed() -> None:
    names = exposed()
    referenced = {m for expr in all_queries() for m in METRIC_NAME.findall(expr)}
    assert len(referenced) >= 10, referenced
    assert sorted(referenced - names.keys()) == []


def test_every_queried_label_is_exposed() -> None:
    names = exposed()
    for expr in all_queries():
        metrics = set(METRIC_NAME.findall(expr))
        if not metrics:
            continue  # `up` and other Prometheus series
        for name, matchers in SELECTOR.findall(expr):
            unknown = set(MATCHER_LABEL.findall(matchers)) - names[name] - TARGET_LABELS
            assert not unknown, f"{name} has no label {unknown} in: {expr}"
        available = set().union(*(names.get(m, set()) for m in metrics)) | TARGET_LABELS
        for group in GROUPING.findall(expr):
            used = {label.strip() for label in group.split(",") if label.strip()}
            assert used <= available, f"unknown labels {used - available} in: {expr}"


def test_every_exposed_metric_is_documented_and_charted() -> None:
    readme = (DEPLOY / "README.md").read_text()
    charted = {m for expr in panel_queries() for m in METRIC_NAME.findall(expr)}
    for family in Metrics().registry.collect():
        sample = family.name + SUFFIXES[family.type][0]
        documented = f"`{family.name}`" in readme or f"`{sample}`" in readme
        assert documented, f"{sample} is missing from deploy/README.md"
        assert any(m.startswith(family.name) for m in charted), f"no panel shows {sample}"


def test_alert_rules_are_complete() -> None:
    rules = alert_rules()
    assert {r["alert"] for r in rules} >= {
        "MemberflowConsumerLagHigh", "MemberflowWorkerStalled", "MemberflowRejectionRateHigh",
        "MemberflowBatchLatencyHigh", "MemberflowDatabaseRetries", "MemberflowTargetDown"}
    for rule in rules:
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"].get("summary"), rule["alert"]
        assert rule["annotations"].get("description"), rule["alert"]
        assert rule.get("for"), rule["alert"]


def test_dashboard_uses_the_datasource_input() -> None:
    doc = dashboard()
    assert [i["name"] for i in doc["__inputs"]] == ["DS_PROMETHEUS"]
    assert doc["schemaVersion"] >= 39
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    for panel in doc["panels"]:
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        assert panel["targets"], panel["title"]
        for t in panel["targets"]:
            assert t["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]


@pytest.mark.skipif(shutil.which("promtool") is None,
                    reason="promtool not installed (apt-get install prometheus)")
def test_promtool_accepts_config_rules_and_rule_tests() -> None:
    for args in (["check", "config", "prometheus.yml"],
                 ["check", "rules", "alerts.yml"],
                 ["test", "rules", "alerts_test.yml"]):
        run = subprocess.run(["promtool", *args], cwd=PROMETHEUS, capture_output=True,
                             text=True, timeout=60, check=False)
        assert run.returncode == 0, f"promtool {' '.join(args)}:\n{run.stdout}{run.stderr}"
