//! The daemon under test: `etcd-sentinel run` on a free loopback port, its API, metrics and log.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::{EtcdCluster, free_ports, wait_for};

/// A running daemon on a free loopback port, killed on drop.
pub struct Daemon {
    pub child: Child,
    pub port: u16,
    pub log: PathBuf,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    /// `https` when started with `--tls-cert`.
    scheme: &'static str,
}

impl Daemon {
    /// Starts `run --config` with the given TOML (without `listen`, which the harness sets).
    pub fn start(config: &str) -> Daemon {
        Daemon::start_with(config, &[])
    }

    /// Starts `run --config` with the given TOML and extra flags (`--api-token-file`, `--tls-cert`, a log level).
    pub fn start_with(config: &str, extra: &[&std::ffi::OsStr]) -> Daemon {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("sentinel.toml");
        std::fs::write(&path, config).expect("write config");
        let port = free_ports(1)[0];
        let log = dir.path().join("daemon.log");
        let child = Command::new(env!("CARGO_BIN_EXE_etcd-sentinel"))
            .args([
                "run",
                "--log-format",
                "json",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--config",
            ])
            .arg(&path)
            .args(extra)
            .env_remove("ETCD_SENTINEL_ENDPOINTS")
            .env_remove("ETCDCTL_ENDPOINTS")
            .env_remove("ETCD_SENTINEL_API_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start the daemon");
        let scheme = if extra.iter().any(|a| *a == "--tls-cert") {
            "https"
        } else {
            "http"
        };
        Daemon {
            child,
            port,
            log,
            config: path,
            dir,
            scheme,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}://127.0.0.1:{}{path}", self.scheme, self.port)
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let client = reqwest::Client::new();
        match client
            .get(self.url(path))
            .timeout(Duration::from_secs(5))
            .send()
            .await
        {
            Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
            Err(_) => (0, String::new()),
        }
    }

    /// POSTs an empty body, with a bearer token when given: (status, body).
    pub async fn post(&self, path: &str, token: Option<&str>) -> (u16, String) {
        let mut request = reqwest::Client::new()
            .post(self.url(path))
            .timeout(Duration::from_secs(10));
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        match request.send().await {
            Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
            Err(_) => (0, String::new()),
        }
    }

    /// DELETE with a bearer token: (status, body).
    pub async fn delete(&self, path: &str, token: &str) -> (u16, String) {
        let request = reqwest::Client::new()
            .delete(self.url(path))
            .timeout(Duration::from_secs(10))
            .bearer_auth(token);
        match request.send().await {
            Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
            Err(_) => (0, String::new()),
        }
    }

    pub async fn json(&self, path: &str) -> Value {
        let (code, body) = self.get(path).await;
        assert_eq!(code, 200, "GET {path}: {body}");
        serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("GET {path} is not JSON ({e}): {body}"))
    }

    pub async fn wait_ready(&self) {
        wait_for(
            "the daemon's first poll (/readyz 200)",
            Duration::from_secs(20),
            || async { (self.get("/readyz").await.0 == 200).then_some(()) },
        )
        .await;
    }

    pub async fn metrics(&self) -> String {
        let (code, body) = self.get("/metrics").await;
        assert_eq!(code, 200);
        body
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Rewrites the configuration file and sends SIGHUP: a reload (whose outcome the caller waits for).
    pub fn reload_with(&self, config: &str) {
        std::fs::write(&self.config, config).expect("write config");
        self.signal(libc::SIGHUP);
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child process.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn config_for(clusters: &[(&str, &EtcdCluster, &str)]) -> String {
    clusters
        .iter()
        .map(|(name, cluster, extra)| {
            let endpoints: Vec<String> = cluster
                .members
                .iter()
                .map(|m| format!("{:?}", m.client_url()))
                .collect();
            format!(
                "[[cluster]]\nname = {name:?}\nendpoints = [{}]\n{extra}\n",
                endpoints.join(", ")
            )
        })
        .collect()
}

/// The value of one sample, found by its metric name and a label substring.
pub fn sample(metrics: &str, name: &str, label: &str) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
