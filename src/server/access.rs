//! `--cors` and `--host-whitelist`: what etcd checks on every request to the client port that
//! is not a gRPC call (the JSON gateway, `/health`, `/metrics`, ...). A browser on another
//! origin may read the answers only if `--cors` allows that origin (the answer names it, or
//! `*`), and a plain-HTTP request must name an allowed host in its `Host`, so that a web page
//! cannot reach a member on the loopback by a DNS name that it controls (DNS rebinding,
//! CVE-2018-5702). An `https://` listener's requests skip the host check, as etcd's do.
//! gRPC calls pass untouched.

use std::collections::BTreeSet;

use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use tonic::body::BoxBody;

use super::log;

/// What a list flag allows: everything (`*`, or the flag left empty) or exactly these names.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Allowed {
    Any,
    Only(BTreeSet<String>),
}

impl Allowed {
    fn from_list(list: &str) -> Allowed {
        let names: BTreeSet<String> = list
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map(String::from)
            .collect();
        if names.is_empty() || names.contains("*") {
            Allowed::Any
        } else {
            Allowed::Only(names)
        }
    }

    fn allows(&self, name: &str) -> bool {
        match self {
            Allowed::Any => true,
            Allowed::Only(names) => names.contains(name),
        }
    }
}

/// The client port's access rules for requests that are not gRPC calls.
#[derive(Clone, Debug)]
pub struct AccessControl {
    origins: Allowed,
    hosts: Allowed,
}

impl Default for AccessControl {
    /// etcd's defaults: any origin, any host.
    fn default() -> AccessControl {
        AccessControl {
            origins: Allowed::Any,
            hosts: Allowed::Any,
        }
    }
}

impl AccessControl {
    /// From `--cors` (origins as URLs with a port, as etcd's flag takes them, or `*`) and
    /// `--host-whitelist` (host names without ports, or `*`).
    pub fn from_flags(cors: &str, host_whitelist: &str) -> Result<AccessControl, String> {
        for origin in cors.split(',').map(str::trim) {
            if !origin.is_empty() && origin != "*" {
                check_origin(origin)
                    .map_err(|e| format!("invalid value {cors:?} for flag --cors: {e}"))?;
            }
        }
        Ok(AccessControl {
            origins: Allowed::from_list(cors),
            hosts: Allowed::from_list(host_whitelist),
        })
    }

    /// etcd's answer to a request over plain HTTP whose host is not allowed, if it is one.
    pub fn refusal<B>(&self, request: &Request<B>, secure: bool) -> Option<Response<BoxBody>> {
        if secure {
            return None;
        }
        let host = requested_host(request);
        if self.hosts.allows(host) {
            return None;
        }
        log::warning!(
            "detcd: rejecting HTTP request to prevent DNS rebinding attacks (host {host:?})"
        );
        let refused = super::http::text(StatusCode::MISDIRECTED_REQUEST, &rebinding_refusal(host));
        Some(refused)
    }

    /// The origin an answer to `request` may be read from, if any: `*` when every origin is
    /// allowed, else the request's own `Origin` if it is allowed.
    pub fn allowed_origin(&self, request_headers: &HeaderMap) -> Option<HeaderValue> {
        if self.origins == Allowed::Any {
            return Some(HeaderValue::from_static("*"));
        }
        let origin = request_headers.get(header::ORIGIN)?;
        self.origins
            .allows(origin.to_str().ok()?)
            .then(|| origin.clone())
    }
}

/// A browser's preflight (`OPTIONS`), answered before any endpoint sees it, as etcd does.
pub fn preflight_answer() -> Response<BoxBody> {
    Response::new(tonic::body::boxed(String::new()))
}

/// Lets browsers of `origin` read `response`.
pub fn add_cors_headers(response: &mut Response<BoxBody>, origin: HeaderValue) {
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, GET, OPTIONS, PUT, DELETE"),
    );
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("accept, content-type, authorization"),
    );
}

/// The host a request names, without its port: the URI's authority (HTTP/2, or an absolute
/// URI), else the `Host` header.
fn requested_host<B>(request: &Request<B>) -> &str {
    let authority = request.uri().authority().map(|a| a.as_str());
    let host = authority
        .or_else(|| request.headers().get(header::HOST)?.to_str().ok())
        .unwrap_or("");
    without_port(host)
}

/// `host:port` -> `host`, `[v6]:port` -> `v6`; a name without a port as it is.
fn without_port(host: &str) -> &str {
    if let Some(bracketed) = host.strip_prefix('[') {
        if let Some((v6, port)) = bracketed.split_once(']') {
            if port.is_empty() || port.starts_with(':') {
                return v6;
            }
        }
        return host;
    }
    match host.rsplit_once(':') {
        Some((name, _)) if !name.contains(':') => name,
        _ => host,
    }
}

/// etcd's refusal text for a host outside `--host-whitelist`, which tells the user the way out.
fn rebinding_refusal(host: &str) -> String {
    format!(
        "\netcd received your request, but the Host header was unrecognized.\n\n\
         To fix this, choose one of the following options:\n\
         - Enable TLS, then any HTTPS request will be allowed.\n\
         - Add the hostname you want to use to the whitelist in settings.\n  \
         - e.g. etcd --host-whitelist {host:?}\n\n\
         This requirement has been added to help prevent \"DNS Rebinding\" attacks \
         (CVE-2018-5702).\n\n"
    )
}

/// An origin as etcd's `--cors` takes it: a URL of scheme http, https, unix or unixs with a
/// host and a port.
fn check_origin(origin: &str) -> Result<(), String> {
    let (scheme, rest) = origin.split_once("://").unwrap_or(("", origin));
    if !["http", "https", "unix", "unixs"].contains(&scheme) {
        return Err(format!(
            "URL scheme must be http, https, unix, or unixs: {origin}"
        ));
    }
    if rest.contains('/') {
        return Err(format!("URL must not contain a path: {origin}"));
    }
    if without_port(rest) == rest {
        return Err(format!(
            "URL address does not have the form \"host:port\": {origin}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(host: &str) -> Request<()> {
        Request::builder()
            .uri("/health")
            .header(header::HOST, host)
            .body(())
            .unwrap()
    }

    #[test]
    fn hosts_are_compared_without_their_ports_and_only_over_plain_http() {
        let access = AccessControl::from_flags("", "localhost,example.com,::1").unwrap();
        assert!(access.refusal(&request("localhost:2379"), false).is_none());
        assert!(access.refusal(&request("example.com"), false).is_none());
        assert!(access.refusal(&request("[::1]:2379"), false).is_none());
        let refused = access.refusal(&request("evil.com:2379"), false).unwrap();
        assert_eq!(refused.status(), StatusCode::MISDIRECTED_REQUEST);
        // Names are compared exactly, as etcd compares them.
        assert!(access.refusal(&request("LOCALHOST"), false).is_some());
        assert!(access.refusal(&request("evil.com"), true).is_none());
        let open = AccessControl::from_flags("", "").unwrap();
        assert!(open.refusal(&request("evil.com"), false).is_none());
    }

    #[test]
    fn origins_allowed_are_named_in_the_answer() {
        let mut headers = HeaderMap::new();
        headers.insert(header::ORIGIN, HeaderValue::from_static("http://a.com:1"));
        let any = AccessControl::default();
        assert_eq!(any.allowed_origin(&headers).unwrap(), "*");
        let one = AccessControl::from_flags("http://a.com:1", "*").unwrap();
        assert_eq!(one.allowed_origin(&headers).unwrap(), "http://a.com:1");
        headers.insert(header::ORIGIN, HeaderValue::from_static("http://b.com"));
        assert!(one.allowed_origin(&headers).is_none());
        assert!(one.allowed_origin(&HeaderMap::new()).is_none());
    }

    #[test]
    fn cors_origins_need_a_scheme_and_a_port_as_in_etcd() {
        assert!(AccessControl::from_flags("*", "").is_ok());
        assert!(AccessControl::from_flags("http://a.com:1,https://b.com:443", "").is_ok());
        let no_port = AccessControl::from_flags("http://example.com", "").unwrap_err();
        assert!(
            no_port.contains("does not have the form \"host:port\""),
            "{no_port}"
        );
        let no_scheme = AccessControl::from_flags("example.com:80", "").unwrap_err();
        assert!(no_scheme.contains("URL scheme must be"), "{no_scheme}");
    }

    #[test]
    fn the_refusal_names_the_host_to_allow() {
        let text = rebinding_refusal("evil.com");
        assert!(
            text.contains("etcd --host-whitelist \"evil.com\"\n"),
            "{text}"
        );
        assert!(text.starts_with("\netcd received your request"), "{text}");
    }
}
