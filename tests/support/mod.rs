//! The real-etcd test harness: starts N-member clusters of Debian's `etcd` (3.4) on free loopback ports in a temp
//! dir, and can kill, freeze, thaw, restart members and add a learner. Everything is removed on drop; each etcd
//! also gets SIGKILL from the kernel if the test process dies first, so no etcd outlives a test run.
#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod daemon;
pub mod moto;
pub mod pki;
pub mod prom;
pub mod server;

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use etcd_client::{Client, MemberAddOptions};
use etcd_sentinel::etcd::connect::{ConnectSettings, Connector};
use etcd_sentinel::etcd::endpoint::Endpoint;
use etcd_sentinel::etcd::tls::TlsSettings;
use etcd_sentinel::secret::{Credentials, Secret};
use tempfile::TempDir;

/// The etcd binary: `$ETCD_BIN`, or `etcd` on the PATH (Debian's etcd-server package).
pub fn etcd_bin() -> String {
    std::env::var("ETCD_BIN").unwrap_or_else(|_| "etcd".to_string())
}

/// Runs the etcd-sentinel binary with a clean environment: no stray ETCDCTL_* or ETCD_SENTINEL_* from the caller,
/// and no COLUMNS (it narrows the table), only the variables given.
pub fn sentinel(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_etcd-sentinel"));
    for (k, _) in std::env::vars() {
        if k.starts_with("ETCDCTL_")
            || k.starts_with("ETCD_SENTINEL_")
            || k.starts_with("AWS_")
            || k == "COLUMNS"
        {
            cmd.env_remove(k);
        }
    }
    cmd.args(args).envs(env.iter().copied());
    cmd.output().expect("run etcd-sentinel")
}

/// `etcd-sentinel ARGS…` for a command that prints JSON (`-w json`): the exit code, the JSON (`Null` when it
/// printed none) and everything it printed, stdout then stderr, for the messages of failed assertions.
pub fn sentinel_json(args: &[&str]) -> (i32, serde_json::Value, String) {
    let out = sentinel(args, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    (
        out.status.code().unwrap_or(-1),
        serde_json::from_str(&stdout).unwrap_or(serde_json::Value::Null),
        format!("{stdout}{stderr}"),
    )
}

/// `etcd-sentinel ARGS…`: the exit code and everything it printed, stdout then stderr.
pub fn sentinel_output(args: &[&str]) -> (i32, String) {
    let out = sentinel(args, &[]);
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// `etcd-sentinel status -w json ARGS…`: the exit code and the JSON it printed (panics, showing both streams, when
/// it printed no JSON).
pub fn status_json(args: &[&str]) -> (i32, serde_json::Value) {
    let mut all = vec!["status", "-w", "json"];
    all.extend_from_slice(args);
    let out = sentinel(&all, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "status -w json printed no JSON ({e}):\n{stdout}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().expect("exit code"), json)
}

/// Writes 64 KiB values until etcd refuses with "space exceeded" (a NOSPACE alarm is raised); panics if the
/// quota never fills within 200 writes.
pub async fn fill_to_nospace(client: &mut Client) {
    let value = vec![b'x'; 64 * 1024];
    for i in 0..200 {
        if let Err(e) = client.put(format!("fill-{i}"), value.clone(), None).await {
            assert!(
                e.to_string().contains("space exceeded"),
                "unexpected error {e}"
            );
            return;
        }
    }
    panic!("the quota never filled up");
}

/// Free loopback ports, all held until every one is chosen so none is handed out twice. They are picked below
/// Linux's ephemeral range (32768–60999): a port found free and handed to etcd a moment later could meanwhile
/// become the local port of any client's connection if it were inside that range. A port once handed out is
/// never handed out again by this test process: a killed member's port is free until the member restarts, and a
/// parallel test must not take it meanwhile. Other processes can still take one; `ClusterBuilder::start`
/// retries a start that fails to bind.
pub fn free_ports(n: usize) -> Vec<u16> {
    use std::collections::HashSet;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    const LOW: u64 = 20_000;
    const SPAN: u64 = 8_000; // up to 27999; restore drills keep to 28000–32767
    // Parallel test binaries start at different places (pid and time), then walk on.
    let seed = u64::from(std::process::id()).wrapping_mul(7919)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let handed_out = handed_out.get_or_insert_with(HashSet::new);
    let mut listeners: Vec<TcpListener> = Vec::with_capacity(n);
    let mut tries = 0;
    while listeners.len() < n {
        tries += 1;
        assert!(tries < 10_000, "no free loopback port below 32768");
        let step = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (LOW + (seed.wrapping_add(step.wrapping_mul(104_729))) % SPAN) as u16;
        if handed_out.contains(&port) {
            continue;
        }
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
            listeners.push(l);
        }
    }
    let ports: Vec<u16> = listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect();
    handed_out.extend(&ports);
    ports
}

/// The names in a directory, sorted.
pub fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub struct EtcdMember {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    /// A separate metrics listener (`--listen-metrics-urls`), when asked for.
    pub metrics_port: Option<u16>,
    data_dir: PathBuf,
    log: PathBuf,
    initial_cluster: String,
    initial_state: &'static str,
    extra_args: Vec<String>,
    child: Option<Child>,
    frozen: bool,
    tls: bool,
}

impl EtcdMember {
    pub fn client_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    pub fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    fn spawn(&mut self, token: &str) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open etcd log");
        let mut cmd = Command::new(etcd_bin());
        cmd.arg("--name")
            .arg(&self.name)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--listen-client-urls")
            .arg(self.client_url())
            .arg("--advertise-client-urls")
            .arg(self.client_url())
            .arg("--listen-peer-urls")
            .arg(self.peer_url())
            .arg("--initial-advertise-peer-urls")
            .arg(self.peer_url())
            .arg("--initial-cluster")
            .arg(&self.initial_cluster)
            .arg("--initial-cluster-state")
            .arg(self.initial_state)
            .arg("--initial-cluster-token")
            .arg(token)
            // Fast elections keep tests short; loopback has no latency to speak of.
            .arg("--heartbeat-interval=50")
            .arg("--election-timeout=500")
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log);
        if let Some(port) = self.metrics_port {
            cmd.arg("--listen-metrics-urls")
                .arg(format!("http://127.0.0.1:{port}"));
        }
        // SAFETY: prctl is async-signal-safe; it asks the kernel to SIGKILL etcd when the test thread that
        // started it exits, so a crashed or aborted test cannot leak an etcd process.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        self.child = Some(cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start {} (install Debian's etcd-server, or set ETCD_BIN): {e}",
                etcd_bin()
            )
        }));
    }

    fn signal(&self, sig: i32) {
        if let Some(child) = &self.child {
            // SAFETY: plain kill(2) on a child we own and have not reaped.
            unsafe {
                libc::kill(child.id() as i32, sig);
            }
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

pub struct ClusterBuilder {
    members: usize,
    extra_args: Vec<String>,
    separate_metrics_port: bool,
    tls: bool,
    auth: bool,
}

impl ClusterBuilder {
    pub fn members(mut self, n: usize) -> Self {
        self.members = n;
        self
    }

    /// `--quota-backend-bytes` for every member.
    pub fn quota_backend_bytes(mut self, bytes: u64) -> Self {
        self.extra_args
            .push(format!("--quota-backend-bytes={bytes}"));
        self
    }

    /// Serve /metrics on a port of its own too (`--listen-metrics-urls`), as kubeadm does on 2381.
    pub fn separate_metrics_port(mut self) -> Self {
        self.separate_metrics_port = true;
        self
    }

    /// Clients over TLS with `--client-cert-auth`, certificates from a CA made for the cluster (`cluster.pki`).
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// Users and roles: `root` (password `rootpw`) and a read-only `monitor` (password `monitorpw`) whose role
    /// may read the key `health` only.
    pub fn auth(mut self) -> Self {
        self.auth = true;
        self
    }

    pub fn arg(mut self, arg: &str) -> Self {
        self.extra_args.push(arg.to_string());
        self
    }

    /// Starts the members on fresh ports, with fresh data dirs.
    fn spawn_members(&self, cluster: &EtcdCluster, extra_args: &[String]) -> Vec<EtcdMember> {
        let ports = free_ports(self.members * 3);
        let dir = cluster.dir.path();
        let mut members: Vec<EtcdMember> = (0..self.members)
            .map(|i| EtcdMember {
                name: format!("m{i}"),
                client_port: ports[3 * i],
                peer_port: ports[3 * i + 1],
                metrics_port: self.separate_metrics_port.then_some(ports[3 * i + 2]),
                data_dir: dir.join(format!("m{i}.etcd")),
                log: dir.join(format!("m{i}.log")),
                initial_cluster: String::new(),
                initial_state: "new",
                extra_args: extra_args.to_vec(),
                child: None,
                frozen: false,
                tls: self.tls,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        for m in &mut members {
            m.initial_cluster = initial_cluster.clone();
            m.spawn(&cluster.token);
        }
        members
    }

    pub async fn start(self) -> EtcdCluster {
        let dir = tempfile::Builder::new()
            .prefix("etcd-sentinel-test-")
            .tempdir()
            .expect("temp dir");
        let pki = self.tls.then(|| pki::Pki::create(dir.path()));
        let mut extra_args = self.extra_args.clone();
        if let Some(p) = &pki {
            for (flag, path) in [
                ("--cert-file", &p.server_cert),
                ("--key-file", &p.server_key),
                ("--trusted-ca-file", &p.ca),
            ] {
                extra_args.push(format!("{flag}={}", path.display()));
            }
            extra_args.push("--client-cert-auth".into());
        }
        let token = format!(
            "t-{}-{}",
            std::process::id(),
            dir.path()
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("x")
        );
        let mut cluster = EtcdCluster {
            dir,
            members: Vec::new(),
            token,
            pki,
            credentials: None,
        };
        // Another process may bind a chosen port before etcd does: start again on other ports.
        const ATTEMPTS: usize = 3;
        for attempt in 1..=ATTEMPTS {
            cluster.members = self.spawn_members(&cluster, &extra_args);
            match cluster.wait_for_first_leader(Duration::from_secs(20)).await {
                Ok(_) => break,
                Err(member) if attempt < ATTEMPTS => {
                    eprintln!(
                        "{member} could not bind its port; starting the cluster again on other ports"
                    );
                    cluster.discard_members();
                }
                Err(member) => panic!("{member} could not bind its port, {ATTEMPTS} times"),
            }
        }
        if self.auth {
            cluster.enable_auth().await;
        }
        cluster
    }
}

pub struct EtcdCluster {
    dir: TempDir,
    pub members: Vec<EtcdMember>,
    token: String,
    /// The certificates of a TLS cluster.
    pub pki: Option<pki::Pki>,
    /// The user the harness itself connects as, once auth is enabled.
    credentials: Option<(String, String)>,
}

impl EtcdCluster {
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder {
            members: 3,
            extra_args: Vec::new(),
            separate_metrics_port: false,
            tls: false,
            auth: false,
        }
    }

    /// A healthy cluster of `n` members with a leader.
    pub async fn start(n: usize) -> EtcdCluster {
        Self::builder().members(n).start().await
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn client_url(&self, i: usize) -> String {
        self.members[i].client_url()
    }

    /// Every member's client URL, comma-separated, as `--endpoints` takes them.
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(|m| m.client_url())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// How the harness itself connects: the cluster's client certificate and user, when it has them. Through
    /// the library's connector, the one place connections are made.
    pub fn connect_settings(&self, timeout: Duration) -> ConnectSettings {
        let mut settings = ConnectSettings {
            dial_timeout: timeout,
            command_timeout: timeout,
            ..ConnectSettings::default()
        };
        if let Some(p) = &self.pki {
            settings.tls = TlsSettings {
                cacert: Some(p.ca.clone()),
                cert: Some(p.client_cert.clone()),
                key: Some(p.client_key.clone()),
                ..TlsSettings::default()
            };
        }
        if let Some((user, password)) = &self.credentials {
            settings.credentials = Some(Credentials {
                user: user.clone(),
                password: Secret::new(password.clone()),
            });
        }
        settings
    }

    pub async fn try_client(&self, i: usize, timeout: Duration) -> Option<Client> {
        let connector = Connector::new(self.connect_settings(timeout)).expect("harness connector");
        let endpoint = Endpoint::parse(&self.client_url(i)).expect("member URL");
        connector.connect(&endpoint).await.ok()
    }

    pub async fn client(&self, i: usize) -> Client {
        let connector = Connector::new(self.connect_settings(Duration::from_secs(5)))
            .expect("harness connector");
        let endpoint = Endpoint::parse(&self.client_url(i)).expect("member URL");
        connector
            .connect(&endpoint)
            .await
            .unwrap_or_else(|e| panic!("connect to test member {}: {e}", self.client_url(i)))
    }

    /// Creates `root` and a read-only `monitor` user, then enables authentication.
    async fn enable_auth(&mut self) {
        use etcd_client::Permission;
        let mut c = self.client(0).await;
        c.user_add("root", "rootpw", None).await.expect("add root");
        c.role_add("root").await.ok(); // exists implicitly on some versions
        c.user_grant_role("root", "root").await.expect("grant root");
        c.role_add("monitoring").await.expect("add role");
        c.role_grant_permission("monitoring", Permission::read("health"))
            .await
            .expect("grant read of health");
        c.user_add("monitor", "monitorpw", None)
            .await
            .expect("add monitor");
        c.user_grant_role("monitor", "monitoring")
            .await
            .expect("grant monitoring");
        c.auth_enable().await.expect("enable auth");
        self.credentials = Some(("root".into(), "rootpw".into()));
    }

    /// Ids of the running members, with the leader each reports; `None` until all agree on one leader.
    async fn agreed_leader(&self) -> Option<u64> {
        let mut leader = None;
        for (i, m) in self.members.iter().enumerate() {
            if !m.is_running() || m.frozen {
                continue;
            }
            let mut c = self.try_client(i, Duration::from_millis(500)).await?;
            // Connections have no per-request timeout: bound the call here.
            let status = tokio::time::timeout(Duration::from_millis(500), c.status())
                .await
                .ok()?
                .ok()?;
            if status.leader() == 0 || leader.is_some_and(|l| l != status.leader()) {
                return None;
            }
            leader = Some(status.leader());
        }
        leader
    }

    /// Like `wait_for_leader`, for a cluster just started: `Err(member)` as soon as a member has exited because
    /// one of its ports was taken.
    async fn wait_for_first_leader(&mut self, timeout: Duration) -> Result<u64, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.agreed_leader().await {
                return Ok(l);
            }
            for m in &mut self.members {
                let exited = m
                    .child
                    .as_mut()
                    .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
                if exited && m.log_text().contains("address already in use") {
                    return Err(m.name.clone());
                }
            }
            if Instant::now() > deadline {
                return Ok(self.wait_for_leader(Duration::ZERO).await);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills the members and removes their data dirs and logs, for a start on other ports.
    fn discard_members(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
            let m = &self.members[i];
            let _ = std::fs::remove_dir_all(&m.data_dir);
            let _ = std::fs::remove_file(&m.log);
        }
        self.members.clear();
    }

    /// Waits until every running member reports the same leader.
    pub async fn wait_for_leader(&self, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.agreed_leader().await {
                return l;
            }
            if Instant::now() > deadline {
                let logs: Vec<String> = self
                    .members
                    .iter()
                    .map(|m| format!("--- {} ---\n{}", m.name, tail(&m.log_text(), 20)))
                    .collect();
                panic!("no leader after {timeout:?}\n{}", logs.join("\n"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Index of the member that currently leads.
    pub async fn leader_index(&self) -> usize {
        let leader = self.wait_for_leader(Duration::from_secs(20)).await;
        for i in 0..self.members.len() {
            if !self.members[i].is_running() || self.members[i].frozen {
                continue;
            }
            let mut c = self.client(i).await;
            if let Ok(s) = c.status().await
                && s.header().map(|h| h.member_id()) == Some(leader)
            {
                return i;
            }
        }
        panic!("leader {leader:x} is not one of the running members");
    }

    /// SIGKILL, as a crash or an OOM kill would.
    pub fn kill(&mut self, i: usize) {
        let m = &mut self.members[i];
        if let Some(mut child) = m.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        m.frozen = false;
    }

    /// SIGTERM, waiting for the member to exit: etcd commits and closes its database first (after a SIGKILL the
    /// last writes may be in the WAL only, replayed at the next start).
    pub fn stop(&mut self, i: usize) {
        let m = &mut self.members[i];
        m.signal(libc::SIGTERM);
        if let Some(mut child) = m.child.take() {
            let _ = child.wait();
        }
        m.frozen = false;
    }

    /// The member's data directory (`member/snap/db` is its bbolt database).
    pub fn data_dir(&self, i: usize) -> &Path {
        &self.members[i].data_dir
    }

    /// SIGSTOP: the process keeps its sockets open but answers nothing, like a hung member.
    pub fn freeze(&mut self, i: usize) {
        self.members[i].signal(libc::SIGSTOP);
        self.members[i].frozen = true;
    }

    pub fn thaw(&mut self, i: usize) {
        self.members[i].signal(libc::SIGCONT);
        self.members[i].frozen = false;
    }

    /// Starts a killed member again on its data dir.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        let token = self.token.clone();
        let m = &mut self.members[i];
        m.initial_state = "existing";
        m.spawn(&token);
    }

    /// MemberAdd, retried while etcd refuses it because its members have not been connected long enough yet
    /// (the strict reconfiguration check answers "unhealthy cluster" for about 5s after start).
    pub async fn member_add(&self, peer_url: &str, learner: bool) {
        let leader = self.leader_index().await;
        let client = self.client(leader).await;
        wait_for(
            "etcd to accept a new member",
            Duration::from_secs(20),
            || {
                let mut client = client.clone();
                async move {
                    let opts = learner.then(|| MemberAddOptions::new().with_is_learner());
                    match client.member_add([peer_url], opts).await {
                        Ok(_) => Some(()),
                        Err(e) if e.to_string().contains("unhealthy cluster") => None,
                        Err(e) => panic!("member add {peer_url}: {e}"),
                    }
                }
            },
        )
        .await
    }

    /// Adds a learner through the member API and starts it; returns its index.
    pub async fn add_learner(&mut self) -> usize {
        let ports = free_ports(2);
        let i = self.members.len();
        let name = format!("m{i}");
        let peer_url = format!("http://127.0.0.1:{}", ports[1]);
        self.member_add(&peer_url, true).await;
        let mut initial: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect();
        initial.push(format!("{name}={peer_url}"));
        let mut member = EtcdMember {
            name: name.clone(),
            client_port: ports[0],
            peer_port: ports[1],
            metrics_port: None,
            data_dir: self.dir.path().join(format!("{name}.etcd")),
            log: self.dir.path().join(format!("{name}.log")),
            initial_cluster: initial.join(","),
            initial_state: "existing",
            extra_args: self.members[0].extra_args.clone(),
            child: None,
            frozen: false,
            tls: self.members[0].tls,
        };
        member.spawn(&self.token);
        self.members.push(member);
        i
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut child) = m.child.take() {
                // SIGKILL works on a stopped process too; wait so that no zombie is left.
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
