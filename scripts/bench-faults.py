#!/usr/bin/env python3
"""Fault figures for docs/benchmarks.md (run by `scripts/bench faults`; not a test).

A local 3-member etcd cluster with etcd's default timing (heartbeat 100 ms, election 1000 ms), the daemon polling
every second, and for each scenario, ROUNDS times: the fault, then
  - detect:      fault -> the daemon's API shows the member not healthy
  - new leader:  fault -> the API names another leader (leader scenarios)
  - etcd no-leader: what etcd itself logged: fault -> "elected leader" on a survivor
  - etcdctl:     `etcdctl endpoint health` against a survivor, started at the fault: time until it answers
Environment: BIN (etcd-sentinel), ETCD_BIN, ETCDCTL_BIN, ROUNDS (default 5), OUT (a directory).
"""
import json, os, random, re, signal, socket, statistics, subprocess, sys, tempfile, time, urllib.request
from datetime import datetime

BIN = os.environ["BIN"]
ETCD = os.environ.get("ETCD_BIN", "etcd")
ETCDCTL = os.environ.get("ETCDCTL_BIN", "etcdctl")
ROUNDS = int(os.environ.get("ROUNDS", "5"))
OUT = os.environ.get("OUT", "target/bench")


def free_ports(n):
    socks = []
    while len(socks) < n:
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", random.randint(20000, 32000)))
            socks.append(s)
        except OSError:
            s.close()
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


class Cluster:
    def __init__(self, n=3):
        self.dir = tempfile.mkdtemp(prefix="etcd-sentinel-bench-")
        ports = free_ports(2 * n)
        self.members = [
            {"name": f"m{i}", "client": f"http://127.0.0.1:{ports[2*i]}", "peer": f"http://127.0.0.1:{ports[2*i+1]}"}
            for i in range(n)
        ]
        self.initial = ",".join(f"{m['name']}={m['peer']}" for m in self.members)
        self.procs = [None] * n
        for i in range(n):
            self.start(i, "new")

    def start(self, i, state="existing"):
        m = self.members[i]
        log = open(f"{self.dir}/{m['name']}.log", "a")
        self.procs[i] = subprocess.Popen(
            [ETCD, "--name", m["name"], "--data-dir", f"{self.dir}/{m['name']}.etcd",
             "--listen-client-urls", m["client"], "--advertise-client-urls", m["client"],
             "--listen-peer-urls", m["peer"], "--initial-advertise-peer-urls", m["peer"],
             "--initial-cluster", self.initial, "--initial-cluster-state", state,
             "--initial-cluster-token", f"bench-{os.getpid()}",
             # zap's JSON log has millisecond times on raft's lines too (3.4's default raft log has seconds).
             "--logger", "zap", "--log-outputs", "stderr"],
            stdout=log, stderr=log)

    def kill(self, i):
        self.procs[i].kill()
        self.procs[i].wait()

    def log(self, i):
        return open(f"{self.dir}/{self.members[i]['name']}.log").read()

    def stop(self):
        for p in self.procs:
            if p and p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.kill()
                p.wait()
        subprocess.run(["rm", "-rf", self.dir])


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return json.load(r)
    except Exception:
        return None


def wait(pred, timeout=60, step=0.02):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    raise SystemExit(f"timed out waiting ({timeout}s)")


LOG_TIME = re.compile(r'(\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d\.\d+)')


def etcd_election(text, since):
    """Seconds from the fault (`since`, wall clock) to a survivor logging "elected leader": etcd's own figure for
    how long the cluster had no leader (3.4's text log and 3.5's JSON log both carry the line)."""
    for line in text.splitlines():
        if "elected leader" not in line:
            continue
        m = LOG_TIME.search(line)
        if not m:
            continue
        # Both versions log UTC on this machine (TZ unset); 3.5 appends a zone offset, which is dropped here.
        t = datetime.fromisoformat(m.group(1).replace(" ", "T")[:26] + "+00:00").timestamp()
        if t >= since:
            return t - since
    return None


def main():
    os.makedirs(OUT, exist_ok=True)
    cluster = Cluster()
    port = free_ports(1)[0]
    base = f"http://127.0.0.1:{port}"
    eps = [m["client"] for m in cluster.members]
    cfg = f"{OUT}/faults.toml"
    open(cfg, "w").write(f'[[cluster]]\nname = "b"\nendpoints = {json.dumps(eps)}\ninterval = "1s"\n')
    daemon = subprocess.Popen([BIN, "run", "--listen", f"127.0.0.1:{port}", "--config", cfg, "--log-level", "warn"],
                              stderr=open(f"{OUT}/faults-daemon.log", "w"))
    results = {}
    try:
        view = lambda: get(f"{base}/api/v1/clusters/b")
        wait(lambda: (v := view()) and v["healthy"], 60)

        def member_index(member_id):
            v = view()
            for e in v["endpoints"]:
                if e["member_id"] == member_id:
                    return eps.index(e["endpoint"])

        for scenario in ["follower SIGKILL", "leader SIGKILL", "leader SIGSTOP"]:
            rows = results.setdefault(scenario, {"detect": [], "new_leader": [], "etcd_no_leader": [], "etcdctl": []})
            for _ in range(ROUNDS):
                v = wait(lambda: (v := view()) and v["healthy"] and v["leader_id"] and v, 60)
                leader = member_index(v["leader_id"])
                victim = leader if scenario.startswith("leader") else (leader + 1) % 3
                survivor = next(i for i in range(3) if i != victim and i != leader) if victim != leader else (leader + 1) % 3
                old_leader = v["leader_id"]
                wall = time.time()
                t0 = time.monotonic()
                if "KILL" in scenario:
                    cluster.kill(victim)
                else:
                    cluster.procs[victim].send_signal(signal.SIGSTOP)
                ctl = subprocess.Popen([ETCDCTL, "--endpoints", eps[survivor], "endpoint", "health"],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                       env={**os.environ, "ETCDCTL_API": "3"})
                detect = new_leader = ctl_done = None
                while time.monotonic() - t0 < 30 and (
                        detect is None or ctl_done is None or (new_leader is None and victim == leader)):
                    if ctl_done is None and ctl.poll() is not None:
                        ctl_done = time.monotonic() - t0 if ctl.returncode == 0 else float("nan")
                    v = view()
                    if v:
                        e = next(e for e in v["endpoints"] if e["endpoint"] == eps[victim])
                        if detect is None and not e["healthy"]:
                            detect = time.monotonic() - t0
                        if new_leader is None and v["leader_id"] and v["leader_id"] != old_leader:
                            new_leader = time.monotonic() - t0
                    time.sleep(0.01)
                rows["etcdctl"].append(ctl_done if ctl_done == ctl_done else None)
                rows["detect"].append(detect)
                if victim == leader:
                    rows["new_leader"].append(new_leader)
                    time.sleep(0.5)
                    rows["etcd_no_leader"].append(etcd_election(cluster.log(survivor), wall))
                if "KILL" in scenario:
                    cluster.start(victim)
                else:
                    time.sleep(2)
                    cluster.procs[victim].send_signal(signal.SIGCONT)
    finally:
        daemon.terminate()
        daemon.wait()
        cluster.stop()

    def fmt(xs):
        xs = [x for x in xs if x is not None]
        if not xs:
            return "-"
        return f"{statistics.median(xs):.2f} s / {max(xs):.2f} s"

    print(f"| scenario ({ROUNDS} rounds) | detect (median / worst) | new leader shown | etcd's own no-leader time | etcdctl endpoint health on a survivor |")
    print("|---|---|---|---|---|")
    for scenario, rows in results.items():
        print(f"| {scenario} | {fmt(rows['detect'])} | {fmt(rows['new_leader'])} | {fmt(rows['etcd_no_leader'])} | {fmt(rows['etcdctl'])} |")
    version = subprocess.run([ETCD, "--version"], capture_output=True, text=True).stdout.split()[2]
    json.dump(results, open(f"{OUT}/faults-{version}.json", "w"), indent=1)
    # How often the new leader was shown soon after etcd's own election.
    pairs = [(s, e) for sc in results.values() for s, e in zip(sc["new_leader"], sc["etcd_no_leader"])
             if s is not None and e is not None]
    soon = sum(1 for s, e in pairs if s - e <= 0.25)
    print(f"new leader shown within 0.25 s of etcd's own election: {soon} of {len(pairs)} leader rounds")


if __name__ == "__main__":
    main()
