"""deploy/: the Grafana dashboard and the Prometheus files parse, and every
metric they name is one that a real server and real worker metrics export."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap

import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from starlingpy.worker.metrics import MULTIPROC_ENV, workers_registry
from tests.e2e.test_metrics import metrics_url, scrape
from tests.support import REPO, BlockingClient, ServerProcess

DEPLOY = REPO / "deploy"
METRIC = re.compile(r"\bstarlingpy_[a-z_]+")


def exported_by_server(tmp_path) -> set[str]:
    with ServerProcess(tmp_path / "spool", "--metrics", "127.0.0.1:0", "--sync", "always") as server:
        with BlockingClient(server.address) as client:
            client.set(b"q", b"x")  # a queue, and an fsync round
        return {name for name, _ in scrape(metrics_url(server))}


def exported_by_workers(tmp_path) -> set[str]:
    """What a worker process records (in a real multiprocess directory),
    summed as a pool parent or the dashboard serves it."""
    directory = tmp_path / "worker-metrics"
    directory.mkdir()
    record = textwrap.dedent("""\
        from starlingpy.worker.metrics import WorkerMetrics
        WorkerMetrics({"t"}).finished("t", "failed", 0.01)
        """)
    subprocess.run([sys.executable, "-c", record], cwd=REPO, check=True, timeout=60,
                   env=dict(os.environ, **{MULTIPROC_ENV: str(directory)}))
    text = generate_latest(workers_registry(directory, lambda: {"pool": (1, 1)})).decode()
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


def test_every_metric_named_in_deploy_is_exported(tmp_path):
    exported = exported_by_server(tmp_path) | exported_by_workers(tmp_path)
    assert "starlingpy_worker_messages_total" in exported and "starlingpy_queue_items" in exported

    alerts = yaml.safe_load((DEPLOY / "starlingpy-alerts.yml").read_text())
    rules = [rule for group in alerts["groups"] for rule in group["rules"]]
    assert {"StarlingpyBacklogGrowing", "StarlingpyQueueNotDraining", "StarlingpyNoWorkerAlive",
            "StarlingpyFailuresRising", "StarlingpyOldestItemTooOld"} <= {rule["alert"] for rule in rules}
    grafana = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    targets = [target for panel in grafana["panels"] for target in panel["targets"]]
    assert len(grafana["panels"]) >= 10

    expressions = [rule["expr"] for rule in rules] + [target["expr"] for target in targets]
    named = {name for expr in expressions for name in METRIC.findall(expr)}
    assert named - exported == set(), f"named in deploy/ but not exported: {sorted(named - exported)}"

    scrape_config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    for rule_file in scrape_config["rule_files"]:
        assert (DEPLOY / rule_file).is_file()
    assert {job["job_name"] for job in scrape_config["scrape_configs"]} == {
        "starlingpy-server", "starlingpy-workers"}
