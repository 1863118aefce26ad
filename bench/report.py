"""Issue 2's targets, the table as printed, and the JSON record of a run.

A section that failed (the server did not start, a restart lost items) is
passed as ``None``: its rows still print, saying so, and the errors are listed
under the table, so that one broken part never hides the others' figures.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

from bench.scenarios import SCENARIOS

# Server CPU-seconds per 100k ops: half of Ruby Starling 0.10.1's, measured here.
CPU_TARGETS = {"set": 1.07, "get": 0.89, "mixed": 0.90, "pipelined set": 0.62, "pipelined get": 0.44}
# The same targets as multiples of Redis's CPU per op in the same run.
REDIS_MULTIPLE_TARGETS = {"set": 1.75, "get": 1.40, "mixed": 1.42, "pipelined set": 12.0,
                          "pipelined get": 6.3}
REPLAY_TARGET_SECONDS = 0.5
RSS_TARGET_BYTES = 160 * 10**6
SYNC_ALWAYS_TARGET_RATIO = 0.5
MB = 10**6
AFTER = ("SIGTERM", "SIGKILL")  # how the server was stopped before a replay
NOT_MEASURED = "not measured (see errors below)"


def _ratio(a: float | None, b: float | None) -> float:
    if a is None or b is None or not b or math.isnan(b):
        return math.nan
    return a / b


def _at_most(value: float, limit: float) -> bool | None:
    return None if math.isnan(value) else value <= limit


def _scenario_row(name: str, mine, theirs, starling=None) -> dict:
    mine_cpu = mine.cpu_per_100k if mine else math.nan
    multiple = _ratio(mine_cpu, theirs.cpu_per_100k if theirs else None)
    return {
        "scenario": name,
        "starlingpy": dataclasses.asdict(mine) if mine else None,
        "redis": dataclasses.asdict(theirs) if theirs else None,
        "starling": dataclasses.asdict(starling) if starling else None,
        "cpu_ratio_to_starling": _ratio(mine_cpu, starling.cpu_per_100k if starling else None),
        "ops_ratio": _ratio(mine.ops_per_second if mine else None,
                            theirs.ops_per_second if theirs else None),
        "cpu_multiple_of_redis": multiple,
        "target_cpu_per_100k": CPU_TARGETS[name],
        "target_multiple_of_redis": REDIS_MULTIPLE_TARGETS[name],
        "cpu_target_met": _at_most(mine_cpu, CPU_TARGETS[name]),
        "multiple_target_met": _at_most(multiple, REDIS_MULTIPLE_TARGETS[name]),
    }


def _sync(sync: dict | None) -> dict | None:
    if sync is None:
        return None
    ratio = _ratio(sync["always"].ops_per_second, sync["never"].ops_per_second)
    return {"never": dataclasses.asdict(sync["never"]), "always": dataclasses.asdict(sync["always"]),
            "ratio": ratio, "target_ratio": SYNC_ALWAYS_TARGET_RATIO,
            "met": ratio >= SYNC_ALWAYS_TARGET_RATIO}


def _replay(replay) -> dict | None:
    if replay is None:
        return None
    max_rss = {after: max(r.rss_bytes for r in replay.restarts if r.after == after) for after in AFTER}
    medians = {after: replay.median_to_first_get(after) for after in AFTER}
    return {
        **dataclasses.asdict(replay),
        "empty_start_median": replay.empty_start_to_first_get,
        "median_to_first_get": medians,
        "max_rss_after": max_rss,
        "met": {after: medians[after] < REPLAY_TARGET_SECONDS for after in AFTER},
        "rss_met": {"loaded": replay.rss_loaded_bytes < RSS_TARGET_BYTES,
                    **{f"after {after}": max_rss[after] < RSS_TARGET_BYTES for after in AFTER}},
    }


def build(measurements: dict[str, list | None], sync: dict | None, replay, meta: dict,
          errors: dict[str, str] | None = None) -> dict:
    """Everything measured plus a verdict per target, as one JSON-able dict."""
    by_system = {system: {m.scenario: m for m in rows or ()} for system, rows in measurements.items()}
    ours, redis = by_system.get("starlingpy", {}), by_system.get("redis", {})
    starling = by_system.get("starling", {})
    return {"meta": meta,
            "scenarios": [_scenario_row(name, ours.get(name), redis.get(name), starling.get(name))
                          for name in SCENARIOS],
            "sync": _sync(sync), "replay": _replay(replay), "errors": errors or {}}


def _n(value: float | None, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def _verdict(ok: bool | None) -> str:
    return "-" if ok is None else "met" if ok else "MISSED"


def _scenario_lines(report: dict) -> list[str]:
    header = (f"{'scenario':<14} {'ops/s sp':>9} {'redis':>9} {'ratio':>6} | {'p50 µs sp':>9} "
              f"{'redis':>6} | {'p99 µs sp':>9} {'redis':>6} | {'CPU-s/100k sp':>13} {'redis':>6} "
              f"{'×redis':>7} | {'target':>6} {'×redis':>7} | {'result (CPU, ×redis)':<20} | "
              f"{'starling':>8} {'sp/st':>6}")
    lines = [header, "-" * len(header)]
    empty = dict.fromkeys(("ops_per_second", "p50_us", "p99_us", "cpu_per_100k"), None)
    for row in report["scenarios"]:
        sp, rd = row["starlingpy"] or empty, row["redis"] or empty
        cut = "*" if sp.get("timed_out") or rd.get("timed_out") else ""
        lines.append(
            f"{row['scenario'] + cut:<14} {_n(sp['ops_per_second']):>9} {_n(rd['ops_per_second']):>9} "
            f"{_n(row['ops_ratio'], 2):>5}× | {_n(sp['p50_us']):>9} {_n(rd['p50_us']):>6} | "
            f"{_n(sp['p99_us']):>9} {_n(rd['p99_us']):>6} | {_n(sp['cpu_per_100k'], 2):>13} "
            f"{_n(rd['cpu_per_100k'], 3):>6} {_n(row['cpu_multiple_of_redis'], 2):>6}× | "
            f"{'≤' + _n(row['target_cpu_per_100k'], 2):>6} "
            f"{'≤' + _n(row['target_multiple_of_redis'], 2):>6}× | "
            f"{_verdict(row['cpu_target_met']) + ', ' + _verdict(row['multiple_target_met']):<20} | "
            f"{_n((row.get('starling') or {}).get('cpu_per_100k'), 2):>8} "
            f"{_n(row.get('cpu_ratio_to_starling'), 2):>5}×")
    return lines


def fairness(loads: dict, ops: int) -> dict:
    """Per system, the waiting client's latency while another pipelines."""
    return {"ops": ops, **{system: None if load is None else {
        "ops": load.ops, "p50_us": load.percentile_us(0.5), "p99_us": load.percentile_us(0.99)}
        for system, load in loads.items()}}


def _fairness_lines(report: dict) -> list[str]:
    figures = report.get("fairness")
    if not figures:
        return []
    shown = [f"{system} p50 {_n(f['p50_us'])} p99 {_n(f['p99_us'])} µs"
             for system, f in figures.items() if system != "ops" and f]
    return [f"fairness: {figures['ops']:,} sets one at a time while another client pipelines "
            f"32 deep: " + "; ".join(shown)]


def _other_lines(report: dict) -> list[str]:
    lines = [f"{'other':<34} {'measured':<64} {'target':<10} result", "-" * 116]

    def other(label: str, measured: str, target: str, met: bool | None) -> None:
        lines.append(f"{label:<34} {measured:<64} {target:<10} {_verdict(met)}")

    sync, replay = report["sync"], report["replay"]
    if sync:
        other("sync always: set ops/s", f"{_n(sync['always']['ops_per_second'])} = {sync['ratio']:.2f}× "
              f"sync never ({_n(sync['never']['ops_per_second'])})", "≥ 0.50×", sync["met"])
    else:
        other("sync always: set ops/s", NOT_MEASURED, "≥ 0.50×", None)
    labels = ([f"replay after {after}: first get" for after in AFTER] + ["RSS with items loaded (live)"]
              + [f"RSS after replay ({after})" for after in AFTER] + ["start-up, empty spool: first get"])
    if not replay:
        for label in labels:
            other(label, NOT_MEASURED, "", None)
        return lines
    items, empty = replay["items"], replay["empty_start_median"]
    for after in AFTER:
        runs = [r for r in replay["restarts"] if r["after"] == after]
        median = replay["median_to_first_get"][after]
        listening = sorted(r["to_listening"] for r in runs)[len(runs) // 2]
        other(f"replay after {after}: first get",
              f"{median:.2f} s ({items:,} items; listening {listening:.2f} s; "
              f"{median - empty:+.2f} s vs empty)", "< 0.5 s", replay["met"][after])
    other("RSS with items loaded (live)", f"{replay['rss_loaded_bytes'] / MB:,.0f} MB ({items:,} items)",
          "< 160 MB", replay["rss_met"]["loaded"])
    for after in AFTER:
        left = min(r["items_after"] for r in replay["restarts"] if r["after"] == after)
        other(f"RSS after replay ({after})", f"{replay['max_rss_after'][after] / MB:,.0f} MB "
              f"(max of restarts; {left:,} items left)", "< 160 MB", replay["rss_met"][f"after {after}"])
    other("start-up, empty spool: first get", f"{empty:.2f} s (interpreter + imports: the floor)",
          "", None)
    rate = items / replay["load_seconds"] if replay["load_seconds"] else math.nan
    other("load of the replay items", f"{replay['load_seconds']:.1f} s ({_n(rate)} pipelined sets/s)",
          "", None)
    return lines


def format_table(report: dict) -> str:
    """The table as printed by ``python -m bench``."""
    meta = report["meta"]
    lines = [
        (f"starlingpy benchmark ({meta['mode']}): {meta['value_bytes']}-byte values, "
         f"{meta['connections']} connections, pipelined = {meta['depth']} in flight per connection"),
        (f"starlingpy {meta['starlingpy_version']} (sync {meta['sync']}) vs Redis "
         f"{meta['redis_version']} (RPUSH/LPOP on one list), same run; sp = starlingpy"),
        f"Ruby Starling (CPU-s/100k, 'starling'; sp/st = starlingpy / Starling): "
        f"{meta.get('starling', 'not measured')}",
        (f"{meta['cpus']} CPUs, 1-minute load average {meta['load_average'][0]:.2f} at the start, "
         f"{meta['load_average'][1]:.2f} at the end"),
        "",
        *_scenario_lines(report),
        "",
        *_other_lines(report),
        *_fairness_lines(report),
        "",
        ("CPU-s/100k: server user+system CPU seconds per 100,000 operations (/proc/<pid>/stat); "
         "p50/p99: per-operation latency seen by the client;"),
        "start-up times: median of the restarts, from spawning the process to the first get reply.",
    ]
    if any((row["starlingpy"] or {}).get("timed_out") or (row["redis"] or {}).get("timed_out")
           for row in report["scenarios"]):
        lines.append(f"*: hit the {meta['time_limit']:g} s time limit before its operation count.")
    if meta["mode"] == "quick":
        lines.append("quick run: small counts, for a smoke test; the targets apply to the full run.")
    for section, error in report["errors"].items():
        lines.append(f"error in {section}: {error}")
    return "\n".join(lines)


def write_json(report: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
