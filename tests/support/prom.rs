//! Debian's Prometheus and Alertmanager on free loopback ports, in temp dirs named `etcd-sentinel-e2e-*`, killed
//! with the test (and by the kernel if the test process dies first).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_ports;

/// A Prometheus or an Alertmanager, its URL and its log.
pub struct Server {
    child: Child,
    pub url: String,
    pub dir: tempfile::TempDir,
    log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Prometheus with the given configuration (YAML), reading rules from the paths it names.
    pub async fn prometheus(config: &str) -> Server {
        let bin = std::env::var("PROMETHEUS_BIN").unwrap_or_else(|_| "prometheus".into());
        Server::start(&bin, config, "/-/ready", |dir, port| {
            vec![
                format!("--config.file={}", dir.join("config.yml").display()),
                format!("--storage.tsdb.path={}", dir.join("data").display()),
                format!("--web.listen-address=127.0.0.1:{port}"),
            ]
        })
        .await
    }

    /// Alertmanager with the given configuration (YAML), without its cluster gossip port.
    pub async fn alertmanager(config: &str) -> Server {
        let bin =
            std::env::var("ALERTMANAGER_BIN").unwrap_or_else(|_| "prometheus-alertmanager".into());
        Server::start(&bin, config, "/-/ready", |dir, port| {
            vec![
                format!("--config.file={}", dir.join("config.yml").display()),
                format!("--storage.path={}", dir.join("data").display()),
                format!("--web.listen-address=127.0.0.1:{port}"),
                "--cluster.listen-address=".into(),
            ]
        })
        .await
    }

    async fn start(
        bin: &str,
        config: &str,
        ready: &str,
        args: impl Fn(&Path, u16) -> Vec<String>,
    ) -> Server {
        // A port taken between choosing it and the server binding it: start again on another.
        for _ in 0..3 {
            let dir = tempfile::Builder::new()
                .prefix("etcd-sentinel-e2e-")
                .tempdir()
                .expect("temp dir");
            std::fs::write(dir.path().join("config.yml"), config).expect("write config");
            let port = free_ports(1)[0];
            let log = dir.path().join("server.log");
            let mut cmd = Command::new(bin);
            cmd.args(args(dir.path(), port))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).expect("log"));
            // SAFETY: prctl is async-signal-safe; the server dies with the test thread that started it.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
            let child = cmd.spawn().unwrap_or_else(|e| {
                panic!("cannot start {bin} (scripts/install-deps installs it): {e}")
            });
            let mut server = Server {
                child,
                url: format!("http://127.0.0.1:{port}"),
                dir,
                log,
            };
            if server.wait_ready(ready).await {
                return server;
            }
        }
        panic!("{bin} did not start on three ports");
    }

    /// Whether it became ready (false: it exited, e.g. its port was taken).
    async fn wait_ready(&mut self, path: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = reqwest::Client::new();
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if let Ok(r) = client
                .get(format!("{}{path}", self.url))
                .timeout(Duration::from_secs(1))
                .send()
                .await
                && r.status().is_success()
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("not ready within 30s:\n{}", self.log_text());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET a path of its HTTP API as JSON.
    pub async fn json(&self, path_and_query: &str) -> serde_json::Value {
        let r = reqwest::Client::new()
            .get(format!("{}{path_and_query}", self.url))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path_and_query}: {e}"));
        let text = r.text().await.unwrap_or_default();
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("GET {path_and_query}: not JSON: {e}: {text}"))
    }

    /// An instant query through Prometheus' HTTP API: its `data.result`, or the error it gave.
    pub async fn query(&self, expr: &str) -> Result<Vec<serde_json::Value>, String> {
        let r = reqwest::Client::new()
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", expr)])
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let text = r.text().await.map_err(|e| e.to_string())?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
        if v["status"] != "success" {
            return Err(format!("{}: {}", v["errorType"], v["error"]));
        }
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }
}
