#!/usr/bin/env python3
"""Writes etcd-sentinel.json, the Grafana dashboard, from the panel list below (one place to read and review,
instead of 3000 lines of JSON). `python3 dashboards/generate.py --check` (scripts/test) fails when the JSON file
is not what this script writes. Every query is run against a real Prometheus by tests/ecosystem.rs."""

import json
import pathlib
import sys

OUT = pathlib.Path(__file__).with_name("etcd-sentinel.json")
DS = {"type": "prometheus", "uid": "${datasource}"}
C = 'cluster="$cluster"'

panels = []
_next_id = [1]
_y = [0]
_row_x = [0]
_row_h = [0]


def _place(w, h):
    if _row_x[0] + w > 24:
        _y[0] += _row_h[0]
        _row_x[0], _row_h[0] = 0, 0
    pos = {"x": _row_x[0], "y": _y[0], "w": w, "h": h}
    _row_x[0] += w
    _row_h[0] = max(_row_h[0], h)
    return pos


def row(title):
    _y[0] += _row_h[0]
    _row_x[0], _row_h[0] = 0, 0
    panels.append({"type": "row", "title": title, "collapsed": False, "panels": [],
                   "id": _new_id(), "gridPos": {"x": 0, "y": _y[0], "w": 24, "h": 1}})
    _y[0] += 1


def _new_id():
    i = _next_id[0]
    _next_id[0] += 1
    return i


def _targets(queries, instant=False, table=False):
    out = []
    for ref, (expr, legend) in zip("ABCDEFGHIJ", queries):
        t = {"refId": ref, "datasource": DS, "expr": expr, "legendFormat": legend}
        if instant:
            t["instant"] = True
            t["range"] = False
        if table:
            t["format"] = "table"
        out.append(t)
    return out


def panel(kind, title, queries, w=8, h=8, unit=None, description="", thresholds=None, mappings=None,
          options=None, custom=None, instant=False, table=False, transformations=None, decimals=None,
          min_=None, max_=None, overrides=None):
    defaults = {}
    if unit:
        defaults["unit"] = unit
    if decimals is not None:
        defaults["decimals"] = decimals
    if min_ is not None:
        defaults["min"] = min_
    if max_ is not None:
        defaults["max"] = max_
    if thresholds:
        defaults["thresholds"] = {"mode": "absolute", "steps": [
            {"color": color, "value": value} for value, color in thresholds]}
        defaults["color"] = {"mode": "thresholds"}
    if mappings:
        defaults["mappings"] = mappings
    if custom:
        defaults["custom"] = custom
    p = {"type": kind, "title": title, "id": _new_id(), "gridPos": _place(w, h), "datasource": DS,
         "description": description, "targets": _targets(queries, instant, table),
         "fieldConfig": {"defaults": defaults, "overrides": overrides or []}, "options": options or {}}
    if transformations:
        p["transformations"] = transformations
    panels.append(p)


def by_name(name, **properties):
    """A field override: the series or column called `name` gets these properties."""
    return {"matcher": {"id": "byName", "options": name},
            "properties": [{"id": k.replace("__", "."), "value": v} for k, v in properties.items()]}


def yes_no(yes, no):
    return [{"type": "value", "options": {
        "1": {"text": yes, "color": "green", "index": 0},
        "0": {"text": no, "color": "red", "index": 1}}}]


STAT = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "colorMode": "background", "graphMode": "none", "textMode": "value"}
TS = {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "max"]},
      "tooltip": {"mode": "multi", "sort": "desc"}}
STEPS = {"lineInterpolation": "stepAfter", "fillOpacity": 10}
BARS = {"drawStyle": "bars", "fillOpacity": 60}

# --- The verdict ---------------------------------------------------------------------------------------------
row("Verdict")
panel("stat", "Leader", [(f"etcd_sentinel_cluster_has_leader{{{C}}}", "")], w=4, h=4, options=STAT,
      mappings=yes_no("leader", "NO LEADER"), description="Whether a member leads (absent: nothing tells).")
panel("stat", "Healthy", [(f"etcd_sentinel_cluster_healthy{{{C}}}", "")], w=4, h=4, options=STAT,
      mappings=yes_no("healthy", "UNHEALTHY"),
      description="Every endpoint healthy, a leader, quorum, no alarm.")
panel("stat", "Failure tolerance", [(f"etcd_sentinel_cluster_failure_tolerance{{{C}}}", "")], w=4, h=4,
      options=STAT, thresholds=[(None, "red"), (1, "green")], decimals=0,
      description="How many more voting members may fail; negative when quorum is lost.")
panel("stat", "Voting members (healthy / all / quorum)", [
    (f"etcd_sentinel_cluster_healthy_voting_members{{{C}}}", "healthy"),
    (f"etcd_sentinel_cluster_voting_members{{{C}}}", "voting"),
    (f"etcd_sentinel_cluster_quorum_size{{{C}}}", "quorum"),
    (f"etcd_sentinel_cluster_learners{{{C}}}", "learners")], w=4, h=4,
      options={**STAT, "colorMode": "none", "textMode": "value_and_name"}, decimals=0)
panel("stat", "Alarms", [(f"sum(etcd_sentinel_alarm_active{{{C}}}) or vector(0)", "")], w=4, h=4,
      options=STAT, thresholds=[(None, "green"), (1, "red")], decimals=0,
      description="NOSPACE or CORRUPT alarms raised on any member.")
panel("stat", "Warnings", [(f"sum(etcd_sentinel_cluster_warnings{{{C}}})", "")], w=4, h=4, options=STAT,
      thresholds=[(None, "green"), (1, "orange")], decimals=0,
      description="Warnings of the latest poll: GET /api/v1/clusters/$cluster says which.")
panel("table", "Members", [
    (f"etcd_sentinel_endpoint_up{{{C}}}", "up"),
    (f"etcd_sentinel_endpoint_healthy{{{C}}}", "healthy"),
    (f"etcd_sentinel_member_is_leader{{{C}}}", "leader"),
    (f"etcd_sentinel_member_is_learner{{{C}}}", "learner"),
    (f"etcd_sentinel_db_size_bytes{{{C}}}", "db size"),
    (f"etcd_sentinel_raft_index_lag{{{C}}}", "index lag"),
    (f"etcd_sentinel_member_info{{{C}}}", "version")], w=24, h=7, instant=True, table=True,
      description="One row per endpoint, from the latest scrape.",
      transformations=[
          {"id": "merge", "options": {}},
          {"id": "organize", "options": {
              "excludeByName": {"Time": True, "__name__": True, "cluster": True, "job": True, "instance": True,
                                "Value #G": True},
              "renameByName": {"Value #A": "up", "Value #B": "healthy", "Value #C": "leader",
                               "Value #D": "learner", "Value #E": "DB size", "Value #F": "index lag"}}}],
      overrides=[by_name("DB size", unit="bytes")])

# --- Raft ----------------------------------------------------------------------------------------------------
row("Raft")
panel("timeseries", "Leader and term", [
    (f"etcd_sentinel_member_is_leader{{{C}}}", "{{member}} leads"),
    (f"max(etcd_sentinel_raft_term{{{C}}})", "term")], custom=STEPS, options=TS,
      description="Who led when (left axis, 0/1); the term (right axis) rises with every election.",
      overrides=[by_name("term", custom__axisPlacement="right", decimals=0)])
panel("timeseries", "Elections and time without a leader", [
    (f"increase(etcd_sentinel_cluster_leader_changes_total{{{C}}}[$__rate_interval])", "leader changes"),
    (f"increase(etcd_sentinel_cluster_leaderless_seconds_sum{{{C}}}[$__rate_interval])", "seconds without leader")],
      custom=BARS, options=TS)
panel("timeseries", "Raft index lag and apply gap", [
    (f"etcd_sentinel_raft_index_lag{{{C}}}", "{{member}} behind leader"),
    (f"etcd_sentinel_proposals_apply_gap{{{C}}}", "{{member}} committed - applied")], options=TS,
      description="Entries behind the leader's index; committed but not applied (etcd refuses requests beyond 5000).")
panel("timeseries", "Proposals", [
    (f"sum by (member) (rate(etcd_sentinel_proposals_committed_total{{{C}}}[$__rate_interval]))", "{{member}} committed"),
    (f"sum by (member) (rate(etcd_sentinel_proposals_failed_total{{{C}}}[$__rate_interval]))", "{{member}} failed")],
      unit="ops", options=TS)
panel("timeseries", "gRPC requests failed", [
    (f"etcd_sentinel_grpc_requests_failed_ratio{{{C}}}", "{{member}} {{code_class}}")], unit="percentunit",
      options=TS, description="Server errors are the member's fault; client errors (Canceled, NotFound) are not.")
panel("timeseries", "Open file descriptors", [
    (f"etcd_sentinel_member_open_fds{{{C}}} / etcd_sentinel_member_max_fds{{{C}}}", "{{member}}")],
      unit="percentunit", options=TS, min_=0)

# --- Database ------------------------------------------------------------------------------------------------
row("Database")
panel("timeseries", "DB size, in use and quota", [
    (f"etcd_sentinel_db_size_bytes{{{C}}}", "{{member}} size"),
    (f"etcd_sentinel_db_size_in_use_bytes{{{C}}}", "{{member}} in use"),
    (f"max(etcd_sentinel_db_quota_bytes{{{C}}})", "quota")], unit="bytes", options=TS,
      description="The quota applies to the size (free pages included); a defragmentation brings size down to in use.")
panel("gauge", "Quota used", [
    (f"etcd_sentinel_db_size_bytes{{{C}}} / etcd_sentinel_db_quota_bytes{{{C}}}", "{{member}}")],
      unit="percentunit", min_=0, max_=1, thresholds=[(None, "green"), (0.8, "orange"), (0.9, "red")],
      options={"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}},
      description="EtcdDatabaseQuotaLowSpace warns at 80 %, pages at 90 %.")
panel("timeseries", "Fragmentation", [
    (f"etcd_sentinel_db_size_bytes{{{C}}} - etcd_sentinel_db_size_in_use_bytes{{{C}}}", "{{member}} free pages")],
      unit="bytes", options=TS, thresholds=[(None, "green"), (100 * 1024 * 1024, "orange")],
      custom={"thresholdsStyle": {"mode": "line"}},
      description="What a defragmentation would give back; EtcdHighFragmentation above 100 MiB and half the DB.")
panel("state-timeline", "Alarms", [(f"etcd_sentinel_alarm_active{{{C}}}", "{{member}} {{alarm}}")], w=24, h=6,
      mappings=[{"type": "value", "options": {"0": {"text": "-", "color": "green"},
                                              "1": {"text": "raised", "color": "red"}}}],
      options={"showValue": "never", "mergeValues": True})

panel("stat", "KV hashes", [(f"etcd_sentinel_cluster_kv_consistent{{{C}}}", "")], w=8, h=4, options=STAT,
      mappings=yes_no("agree", "DIFFER"),
      description="The last consistency check: the voting members' HashKV at one pinned revision. No value: "
                  "unknown (GET /api/v1/clusters/$cluster, key consistency, says why).")
panel("stat", "Last consistency check", [
    (f"time() - etcd_sentinel_cluster_kv_consistency_check_timestamp_seconds{{{C}}}", "")], w=8, h=4, unit="s",
      options={**STAT, "colorMode": "none"}, description="Age of the last check, whatever its result.")
panel("stat", "Consistency check duration", [
    (f"etcd_sentinel_cluster_kv_consistency_check_duration_seconds{{{C}}}", "")], w=8, h=4, unit="s",
      options={**STAT, "colorMode": "none"},
      description="HashKV reads every member's whole database, one member after another.")

# --- Latency -------------------------------------------------------------------------------------------------
row("Latency")
panel("timeseries", "WAL fsync p99", [
    (f"etcd_sentinel_wal_fsync_duration_seconds{{{C}, quantile=\"0.99\"}}", "{{member}}")], unit="s",
      options=TS, thresholds=[(None, "green"), (0.01, "orange")], custom={"thresholdsStyle": {"mode": "line"}},
      description="etcd wants under 10 ms; gaps are intervals in which the member wrote nothing.")
panel("timeseries", "Backend commit p99", [
    (f"etcd_sentinel_backend_commit_duration_seconds{{{C}, quantile=\"0.99\"}}", "{{member}}")], unit="s",
      options=TS, thresholds=[(None, "green"), (0.025, "orange")], custom={"thresholdsStyle": {"mode": "line"}})
panel("timeseries", "Peer round trip p99", [
    (f"etcd_sentinel_peer_round_trip_time_seconds{{{C}, quantile=\"0.99\"}}", "{{member}} → {{peer}}")],
      unit="s", options=TS, description="Heartbeat round trips between members, from their own histograms.")
panel("timeseries", "Probe duration p90", [
    (f"histogram_quantile(0.9, sum by (endpoint, le) (rate(etcd_sentinel_probe_duration_seconds_bucket{{{C}}}[$__rate_interval])))",
     "{{endpoint}}")], unit="s", options=TS,
      description="The sentinel's own probe of each endpoint: connect, Status, health read, alarms, members, /metrics.")
panel("timeseries", "Poll duration p90", [
    (f"histogram_quantile(0.9, sum by (le) (rate(etcd_sentinel_poll_duration_seconds_bucket{{{C}}}[$__rate_interval])))",
     "poll")], unit="s", options=TS)
panel("timeseries", "Poll errors", [
    (f"increase(etcd_sentinel_poll_errors_total{{{C}}}[$__rate_interval])", "failed probes")], custom=BARS,
      options=TS)

# --- Maintenance ---------------------------------------------------------------------------------------------
row("Snapshots")
panel("stat", "Newest snapshot age", [
    (f"time() - etcd_sentinel_snapshot_last_success_timestamp_seconds{{{C}}}", "")], w=4, h=5, unit="s",
      options={**STAT, "colorMode": "none"})
panel("stat", "Schedule kept", [
    (f"time() - etcd_sentinel_snapshot_last_success_timestamp_seconds{{{C}}}"
     f" < bool 1.5 * etcd_sentinel_snapshot_schedule_interval_seconds{{{C}}}", "")], w=4, h=5, options=STAT,
      mappings=yes_no("on time", "LATE"),
      description="The newest snapshot is younger than 1.5 scheduled intervals (EtcdSnapshotTooOld otherwise).")
panel("stat", "Newest snapshot size", [(f"etcd_sentinel_snapshot_last_size_bytes{{{C}}}", "")], w=4, h=5,
      unit="bytes", options={**STAT, "colorMode": "none"})
panel("stat", "Snapshot duration (mean)", [
    (f"etcd_sentinel_snapshot_duration_seconds_sum{{{C}}} / etcd_sentinel_snapshot_duration_seconds_count{{{C}}}",
     "")], w=4, h=5, unit="s", options={**STAT, "colorMode": "none"})
panel("stat", "Restore drill", [(f"etcd_sentinel_restore_drill_success{{{C}}}", "")], w=4, h=5, options=STAT,
      mappings=yes_no("passed", "FAILED"))
panel("timeseries", "Snapshot failures", [
    (f"increase(etcd_sentinel_snapshot_failures_total{{{C}}}[$__rate_interval])", "{{reason}}")], w=4, h=5,
      custom=BARS, options={**TS, "legend": {"displayMode": "hidden", "placement": "bottom", "calcs": []}})
row("Defragmentation")
panel("timeseries", "Defragmentation runs", [
    (f"increase(etcd_sentinel_defrag_runs_total{{{C}}}[$__rate_interval])", "{{result}}")], custom=BARS,
      options=TS)
panel("timeseries", "Bytes reclaimed", [
    (f"increase(etcd_sentinel_defrag_reclaimed_bytes_total{{{C}}}[$__rate_interval])", "reclaimed")],
      unit="bytes", custom=BARS, options=TS)
panel("state-timeline", "Member being defragmented", [
    (f"etcd_sentinel_defrag_in_progress{{{C}}}", "{{member}}")],
      mappings=[{"type": "value", "options": {"0": {"text": "-", "color": "transparent"},
                                              "1": {"text": "defragmenting", "color": "blue"}}}],
      options={"showValue": "never", "mergeValues": True})
panel("stat", "Last run", [(f"time() - etcd_sentinel_defrag_last_run_timestamp_seconds{{{C}}}", "")], w=4,
      h=4, unit="s", options={**STAT, "colorMode": "none"}, description="Since the end of the last run that was not refused.")
panel("stat", "Last run took", [(f"etcd_sentinel_defrag_duration_seconds{{{C}}}", "")], w=4, h=4, unit="s",
      options={**STAT, "colorMode": "none"})

dashboard = {
    "title": "etcd-sentinel",
    "uid": "etcd-sentinel",
    "description": "etcd clusters as etcd-sentinel sees them: verdict, raft, database, latency, maintenance.",
    "tags": ["etcd", "etcd-sentinel"],
    "timezone": "utc",
    "editable": True,
    "graphTooltip": 1,
    "refresh": "30s",
    "schemaVersion": 39,
    "version": 1,
    "time": {"from": "now-6h", "to": "now"},
    "links": [{"title": "Runbooks", "type": "link", "targetBlank": True,
               "url": "https://github.com/etcd-sentinel/etcd-sentinel/blob/main/docs/runbooks.md"}],
    "annotations": {"list": [{
        "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True, "hide": True,
        "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts", "type": "dashboard"}]},
    "templating": {"list": [
        {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
         "current": {}, "hide": 0, "refresh": 1, "regex": "", "options": []},
        {"name": "cluster", "label": "Cluster", "type": "query", "datasource": DS,
         "query": {"query": "label_values(etcd_sentinel_cluster_healthy, cluster)", "refId": "cluster"},
         "definition": "label_values(etcd_sentinel_cluster_healthy, cluster)",
         "current": {}, "hide": 0, "refresh": 2, "regex": "", "sort": 1, "includeAll": False, "multi": False,
         "options": []},
    ]},
    "panels": panels,
}

text = json.dumps(dashboard, indent=2, ensure_ascii=False) + "\n"
if sys.argv[1:] == ["--check"]:
    if OUT.read_text() != text:
        sys.exit(f"{OUT} is not what {__file__} writes: run python3 dashboards/generate.py")
else:
    OUT.write_text(text)
