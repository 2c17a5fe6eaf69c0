//! What the client port's services share: etcd's errors as gRPC statuses, one unary call to
//! the node for the services tonic generates, and gRPC's receive limit answered as etcd
//! answers it. (KV and Lease are served in `direct.rs`.)

use tonic::{Request, Response, Status};

use super::driver::DriverHandle;
use super::tls_identity::PeerCommonName;
use crate::api::{Credentials, Rpc};
use crate::error::EtcdError;

pub fn status(err: EtcdError) -> Status {
    Status::new(tonic::Code::from_i32(err.code() as i32), err.to_string())
}

/// Who a call is from: the `token` etcd's clients send once they authenticated (or the
/// `Authorization` header of the JSON gateway's clients); without one, the common name of the
/// client's verified certificate, as etcd takes it with `--client-cert-auth`.
pub fn credentials<B>(request: &http::Request<B>) -> Option<Credentials> {
    let headers = request.headers();
    match headers
        .get("token")
        .or_else(|| headers.get("authorization"))
    {
        Some(token) => Some(Credentials::Token(token.to_str().ok()?.to_string())),
        None => common_name(request.extensions()),
    }
}

/// [`credentials`] of a tonic-generated service's call.
pub fn metadata_credentials<T>(request: &Request<T>) -> Option<Credentials> {
    let metadata = request.metadata();
    match metadata
        .get("token")
        .or_else(|| metadata.get("authorization"))
    {
        Some(token) => Some(Credentials::Token(token.to_str().ok()?.to_string())),
        None => common_name(request.extensions()),
    }
}

fn common_name(extensions: &http::Extensions) -> Option<Credentials> {
    let name = extensions.get::<PeerCommonName>()?;
    Some(Credentials::CommonName(name.0.clone()))
}

/// One unary call: the request to the node, its typed answer or etcd's error back.
pub(super) async fn unary<R: Rpc>(
    driver: &DriverHandle,
    request: Request<R>,
) -> Result<Response<R::Response>, Status> {
    let credentials = metadata_credentials(&request);
    driver
        .call_as(request.into_inner(), credentials)
        .await
        .map(Response::new)
        .map_err(status)
}

/// gRPC's receive limit answered the way etcd's server (grpc-go) answers it: tonic reports a
/// message over the limit as OutOfRange, grpc-go (and so every etcd client's expectation) as
/// ResourceExhausted "grpc: received message larger than max (N vs. M)".
pub fn etcd_receive_limit_status(
    mut response: http::Response<tonic::body::BoxBody>,
) -> http::Response<tonic::body::BoxBody> {
    let headers = response.headers_mut();
    let message = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .map(percent_decode)
        .unwrap_or_default();
    let too_large = headers.get("grpc-status").is_some_and(|v| v == "11")
        && message.contains("decoded message length too large");
    if too_large {
        let numbers: Vec<&str> = message
            .split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .collect();
        let text = match numbers[..] {
            [found, limit, ..] => {
                format!("grpc: received message larger than max ({found} vs. {limit})")
            }
            _ => "grpc: received message larger than max".to_string(),
        };
        headers.insert("grpc-status", http::HeaderValue::from_static("8"));
        if let Ok(value) = http::HeaderValue::from_str(&text) {
            headers.insert("grpc-message", value);
        }
    }
    response
}

/// grpc-message is percent-encoded on the wire.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
