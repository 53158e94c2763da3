//! Endpoint parsing: `host:port`, `http://host:port` or `https://host:port`, as etcdctl accepts them.
//!
//! Parsing is strict on purpose: an endpoint with a path, a query or no port is almost always a typo, and
//! discovering that at 3 a.m. as a "connection refused" is worse than an exit 2 that names it.

use std::fmt;

use thiserror::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// One etcd client endpoint, normalised: lowercase scheme and host, explicit port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    scheme: Scheme,
    /// Host as it goes into a URL (IPv6 addresses keep their brackets).
    host: String,
    port: u16,
}

#[derive(Debug, Error, PartialEq, Eq)]
#[error("invalid endpoint {input:?}: {reason}")]
pub struct EndpointError {
    pub input: String,
    pub reason: String,
}

impl Endpoint {
    pub fn parse(input: &str) -> Result<Self, EndpointError> {
        Self::parse_with_default(input, Scheme::Http)
    }

    /// Parses an endpoint; `default` is the scheme of an endpoint written without one (etcdctl speaks TLS to
    /// `host:port` when TLS files are given).
    pub fn parse_with_default(input: &str, default: Scheme) -> Result<Self, EndpointError> {
        let fail = |reason: &str| EndpointError {
            input: input.to_string(),
            reason: reason.to_string(),
        };
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(fail("empty"));
        }
        // The URL parser drops tabs and newlines inside a URL ("a\nb:2379" would become "ab:2379"): a pasted
        // line break is a mistake to show, not to repair.
        if trimmed.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(fail("contains a space or a control character"));
        }
        let (scheme, rest) = match trimmed.split_once("://") {
            Some((s, rest)) => match s.to_ascii_lowercase().as_str() {
                "http" => (Scheme::Http, rest),
                "https" => (Scheme::Https, rest),
                other => {
                    return Err(fail(&format!(
                        "unsupported scheme {other:?} (use http or https)"
                    )));
                }
            },
            None => (default, trimmed),
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains(['/', '?', '#']) {
            return Err(fail("an endpoint is host:port, without a path or query"));
        }
        if authority.contains('@') {
            return Err(fail(
                "credentials do not belong in an endpoint (use --user)",
            ));
        }
        // The port must be written out: a default port is almost always a mistake with etcd (2379).
        let Some((_, port_text)) = authority.rsplit_once(':') else {
            return Err(fail(
                "missing port (expected host:port, e.g. 127.0.0.1:2379)",
            ));
        };
        if port_text.is_empty() || !port_text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(fail(
                "missing port (expected host:port, e.g. 127.0.0.1:2379)",
            ));
        }
        // The url crate validates hosts (IPv4, bracketed IPv6, DNS names) and the port range.
        let url = url::Url::parse(&format!("{}://{}", scheme.as_str(), authority))
            .map_err(|e| fail(&e.to_string()))?;
        let host = match url.host() {
            Some(url::Host::Ipv6(addr)) => format!("[{addr}]"),
            Some(host) => host.to_string(),
            None => return Err(fail("missing host")),
        };
        let port = url
            .port_or_known_default()
            .ok_or_else(|| fail("missing port"))?;
        if port == 0 {
            return Err(fail("port 0 is not a port etcd listens on"));
        }
        Ok(Endpoint { scheme, host, port })
    }

    /// Parses a comma-separated list, as `--endpoints` and `ETCDCTL_ENDPOINTS` take it.
    pub fn parse_list(input: &str) -> Result<Vec<Self>, EndpointError> {
        Self::parse_list_with_default(input, Scheme::Http)
    }

    pub fn parse_list_with_default(
        input: &str,
        default: Scheme,
    ) -> Result<Vec<Self>, EndpointError> {
        let mut out: Vec<Endpoint> = Vec::new();
        for part in input.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let ep = Endpoint::parse_with_default(part, default)?;
            if !out.contains(&ep) {
                out.push(ep);
            }
        }
        if out.is_empty() {
            return Err(EndpointError {
                input: input.to_string(),
                reason: "no endpoint given".to_string(),
            });
        }
        Ok(out)
    }

    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The endpoint as a URL: `http://127.0.0.1:2379`.
    pub fn url(&self) -> String {
        format!("{}://{}:{}", self.scheme.as_str(), self.host, self.port)
    }

    /// Host name without IPv6 brackets, for TLS server-name checks.
    pub fn server_name(&self) -> &str {
        self.host.trim_start_matches('[').trim_end_matches(']')
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_three_forms() {
        assert_eq!(
            Endpoint::parse("127.0.0.1:2379").unwrap().url(),
            "http://127.0.0.1:2379"
        );
        assert_eq!(
            Endpoint::parse("http://10.0.0.1:2379").unwrap().url(),
            "http://10.0.0.1:2379"
        );
        assert_eq!(
            Endpoint::parse("HTTPS://Etcd-0.Example.com:2379/")
                .unwrap()
                .url(),
            "https://etcd-0.example.com:2379"
        );
        let v6 = Endpoint::parse("[::1]:2379").unwrap();
        assert_eq!(v6.url(), "http://[::1]:2379");
        assert_eq!(v6.server_name(), "::1");
    }

    #[test]
    fn rejects_malformed_endpoints_with_a_reason() {
        for (input, needle) in [
            ("", "empty"),
            ("127.0.0.1", "missing port"),
            ("http://127.0.0.1", "missing port"),
            ("127.0.0.1:", "missing port"),
            ("127.0.0.1:99999", "invalid port"),
            ("127.0.0.1:0", "port 0"),
            ("unix://foo:1", "unsupported scheme"),
            ("http://h:2379/v3", "without a path"),
            ("http://u:p@h:2379", "credentials"),
            ("[::1:2379", "invalid"),
            ("a\nb:2379", "control character"),
            ("a\tb:2379", "control character"),
            ("a b:2379", "a space"),
        ] {
            let err = Endpoint::parse(input).unwrap_err();
            assert!(
                err.to_string().contains(needle),
                "{input:?} gave {err} (expected it to mention {needle:?})"
            );
            assert!(
                err.to_string().contains(&format!("{input:?}")),
                "error names the input"
            );
        }
    }

    #[test]
    fn lists_are_split_trimmed_and_deduplicated() {
        let list = Endpoint::parse_list(" a:1, http://a:1 ,b:2,,").unwrap();
        assert_eq!(list.len(), 2);
        assert!(Endpoint::parse_list(" , ").is_err());
        assert!(
            Endpoint::parse_list("a:1,b")
                .unwrap_err()
                .to_string()
                .contains("\"b\"")
        );
    }
}
