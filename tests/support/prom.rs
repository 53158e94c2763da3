//! Debian's Prometheus and Alertmanager (started by `support::server`), and their HTTP APIs.

use std::time::Duration;

use super::server::{Launch, Server};

impl Server {
    /// Prometheus with the given configuration (YAML), reading rules from the paths it names.
    pub async fn prometheus(config: &str) -> Server {
        let bin = std::env::var("PROMETHEUS_BIN").unwrap_or_else(|_| "prometheus".into());
        let launch = Launch {
            bin: &bin,
            config: Some(config),
            ready: "/-/ready",
            env: &[],
        };
        Server::start(launch, |dir, port| {
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
        let launch = Launch {
            bin: &bin,
            config: Some(config),
            ready: "/-/ready",
            env: &[],
        };
        Server::start(launch, |dir, port| {
            vec![
                format!("--config.file={}", dir.join("config.yml").display()),
                format!("--storage.path={}", dir.join("data").display()),
                format!("--web.listen-address=127.0.0.1:{port}"),
                "--cluster.listen-address=".into(),
            ]
        })
        .await
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
