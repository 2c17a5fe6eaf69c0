//! etcd's JSON gateway on the client port: `POST /v3/<service>/<method>` with the request in
//! protobuf's JSON mapping, answered in the same mapping, as etcd's grpc-gateway answers (`curl
//! -d '{"key":"Zm9v"}' http://127.0.0.1:2379/v3/kv/range`).
//!
//! A request's JSON becomes its protobuf encoding through the descriptors of the `.proto` files
//! (compiled by `build.rs`), is decoded into the typed request and served by the same code as
//! its gRPC call: the node for KV, Lease, Cluster and Maintenance, the watch task for Watch,
//! the recipes for Lock and Election. The answer goes back the same way, with grpc-gateway's
//! conventions: field names as the `.proto` spells them, 64-bit integers as strings, bytes in
//! base64, enums by name, default values left out; an error as `{"error","message","code"}`
//! with the HTTP status grpc-gateway gives its gRPC code. Streams (Watch, LeaseKeepAlive,
//! Observe, Snapshot) answer one `{"result":...}` line per response.

// Calls fail with tonic's `Status` as the gRPC services' do; it is large, and rare.
#![allow(clippy::result_large_err)]

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::stream::{BoxStream, StreamExt};
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame};
use prost::Message;
use prost_reflect::{
    DescriptorPool, DeserializeOptions, DynamicMessage, MessageDescriptor, SerializeOptions,
};
use tokio::sync::mpsc;
use tonic::body::BoxBody;
use tonic::{Code, Status};

use super::auth::AuthService;
use super::driver::DriverHandle;
use super::grpc::{credentials, status};
use super::maintenance::MaintenanceService;
use super::recipes::RecipeServices;
use super::watch::{WatchCaller, WatchHandle};
use crate::api::{ClientRequest, Credentials};
use crate::error::EtcdError;
use crate::proto::etcdserverpb::maintenance_server::Maintenance;
use crate::proto::etcdserverpb::{
    AlarmRequest, AuthDisableRequest, AuthEnableRequest, AuthRoleAddRequest, AuthRoleDeleteRequest,
    AuthRoleGetRequest, AuthRoleGrantPermissionRequest, AuthRoleListRequest,
    AuthRoleRevokePermissionRequest, AuthStatusRequest, AuthUserAddRequest,
    AuthUserChangePasswordRequest, AuthUserDeleteRequest, AuthUserGetRequest,
    AuthUserGrantRoleRequest, AuthUserListRequest, AuthUserRevokeRoleRequest, AuthenticateRequest,
    CompactionRequest, DefragmentRequest, DeleteRangeRequest, DowngradeRequest, HashKvRequest,
    HashRequest, LeaseGrantRequest, LeaseKeepAliveRequest, LeaseLeasesRequest, LeaseRevokeRequest,
    LeaseTimeToLiveRequest, MemberAddRequest, MemberListRequest, MemberPromoteRequest,
    MemberRemoveRequest, MemberUpdateRequest, MoveLeaderRequest, PutRequest, RangeRequest,
    SnapshotRequest, StatusRequest, TxnRequest, WatchRequest,
};
use crate::proto::v3electionpb::election_server::Election;
use crate::proto::v3lockpb::lock_server::Lock;

/// The `.proto` files' descriptors, as `build.rs` wrote them.
const DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptors.bin"));

/// The prefixes etcd serves the gateway under (`/v3beta` as etcd 3.4 still does).
const PREFIXES: [&str; 2] = ["/v3/", "/v3beta/"];

/// Response lines of a stream buffered ahead of a client that reads slowly.
const STREAM_LINES_BUFFERED: usize = 16;

/// How a route's request is served.
#[derive(Clone, Copy)]
enum Serve {
    /// By the node, as the request decoded from its encoding.
    Node(fn(&[u8]) -> Result<ClientRequest, prost::DecodeError>),
    KeepAlive,
    Watch,
    Lock,
    Unlock,
    Campaign,
    Proclaim,
    Leader,
    Observe,
    Resign,
    Snapshot,
    /// By the Auth service, which hashes a new password first.
    Auth(fn(&[u8]) -> Result<ClientRequest, prost::DecodeError>),
    Authenticate,
}

fn node<R: Message + Default + Into<ClientRequest>>(
    bytes: &[u8],
) -> Result<ClientRequest, prost::DecodeError> {
    R::decode(bytes).map(Into::into)
}

/// Each route: its path after the prefix, the gRPC method (`package.Service/Method`), and how
/// it is served. The paths are etcd's `google.api.http` bindings.
#[rustfmt::skip]
const ROUTES: &[(&str, &str, Serve)] = &[
    ("kv/range", "etcdserverpb.KV/Range", Serve::Node(node::<RangeRequest>)),
    ("kv/put", "etcdserverpb.KV/Put", Serve::Node(node::<PutRequest>)),
    ("kv/deleterange", "etcdserverpb.KV/DeleteRange", Serve::Node(node::<DeleteRangeRequest>)),
    ("kv/txn", "etcdserverpb.KV/Txn", Serve::Node(node::<TxnRequest>)),
    ("kv/compaction", "etcdserverpb.KV/Compact", Serve::Node(node::<CompactionRequest>)),
    ("watch", "etcdserverpb.Watch/Watch", Serve::Watch),
    ("lease/grant", "etcdserverpb.Lease/LeaseGrant", Serve::Node(node::<LeaseGrantRequest>)),
    ("lease/revoke", "etcdserverpb.Lease/LeaseRevoke", Serve::Node(node::<LeaseRevokeRequest>)),
    ("kv/lease/revoke", "etcdserverpb.Lease/LeaseRevoke", Serve::Node(node::<LeaseRevokeRequest>)),
    ("lease/keepalive", "etcdserverpb.Lease/LeaseKeepAlive", Serve::KeepAlive),
    ("lease/timetolive", "etcdserverpb.Lease/LeaseTimeToLive", Serve::Node(node::<LeaseTimeToLiveRequest>)),
    ("kv/lease/timetolive", "etcdserverpb.Lease/LeaseTimeToLive", Serve::Node(node::<LeaseTimeToLiveRequest>)),
    ("lease/leases", "etcdserverpb.Lease/LeaseLeases", Serve::Node(node::<LeaseLeasesRequest>)),
    ("kv/lease/leases", "etcdserverpb.Lease/LeaseLeases", Serve::Node(node::<LeaseLeasesRequest>)),
    ("cluster/member/add", "etcdserverpb.Cluster/MemberAdd", Serve::Node(node::<MemberAddRequest>)),
    ("cluster/member/remove", "etcdserverpb.Cluster/MemberRemove", Serve::Node(node::<MemberRemoveRequest>)),
    ("cluster/member/update", "etcdserverpb.Cluster/MemberUpdate", Serve::Node(node::<MemberUpdateRequest>)),
    ("cluster/member/list", "etcdserverpb.Cluster/MemberList", Serve::Node(node::<MemberListRequest>)),
    ("cluster/member/promote", "etcdserverpb.Cluster/MemberPromote", Serve::Node(node::<MemberPromoteRequest>)),
    ("maintenance/alarm", "etcdserverpb.Maintenance/Alarm", Serve::Node(node::<AlarmRequest>)),
    ("maintenance/status", "etcdserverpb.Maintenance/Status", Serve::Node(node::<StatusRequest>)),
    ("maintenance/defragment", "etcdserverpb.Maintenance/Defragment", Serve::Node(node::<DefragmentRequest>)),
    ("maintenance/hash", "etcdserverpb.Maintenance/Hash", Serve::Node(node::<HashRequest>)),
    ("maintenance/hashkv", "etcdserverpb.Maintenance/HashKV", Serve::Node(node::<HashKvRequest>)),
    ("maintenance/snapshot", "etcdserverpb.Maintenance/Snapshot", Serve::Snapshot),
    ("maintenance/transfer-leadership", "etcdserverpb.Maintenance/MoveLeader", Serve::Node(node::<MoveLeaderRequest>)),
    ("maintenance/downgrade", "etcdserverpb.Maintenance/Downgrade", Serve::Node(node::<DowngradeRequest>)),
    ("auth/enable", "etcdserverpb.Auth/AuthEnable", Serve::Auth(node::<AuthEnableRequest>)),
    ("auth/disable", "etcdserverpb.Auth/AuthDisable", Serve::Auth(node::<AuthDisableRequest>)),
    ("auth/status", "etcdserverpb.Auth/AuthStatus", Serve::Auth(node::<AuthStatusRequest>)),
    ("auth/authenticate", "etcdserverpb.Auth/Authenticate", Serve::Authenticate),
    ("auth/user/add", "etcdserverpb.Auth/UserAdd", Serve::Auth(node::<AuthUserAddRequest>)),
    ("auth/user/get", "etcdserverpb.Auth/UserGet", Serve::Auth(node::<AuthUserGetRequest>)),
    ("auth/user/list", "etcdserverpb.Auth/UserList", Serve::Auth(node::<AuthUserListRequest>)),
    ("auth/user/delete", "etcdserverpb.Auth/UserDelete", Serve::Auth(node::<AuthUserDeleteRequest>)),
    ("auth/user/changepw", "etcdserverpb.Auth/UserChangePassword", Serve::Auth(node::<AuthUserChangePasswordRequest>)),
    ("auth/user/grant", "etcdserverpb.Auth/UserGrantRole", Serve::Auth(node::<AuthUserGrantRoleRequest>)),
    ("auth/user/revoke", "etcdserverpb.Auth/UserRevokeRole", Serve::Auth(node::<AuthUserRevokeRoleRequest>)),
    ("auth/role/add", "etcdserverpb.Auth/RoleAdd", Serve::Auth(node::<AuthRoleAddRequest>)),
    ("auth/role/get", "etcdserverpb.Auth/RoleGet", Serve::Auth(node::<AuthRoleGetRequest>)),
    ("auth/role/list", "etcdserverpb.Auth/RoleList", Serve::Auth(node::<AuthRoleListRequest>)),
    ("auth/role/delete", "etcdserverpb.Auth/RoleDelete", Serve::Auth(node::<AuthRoleDeleteRequest>)),
    ("auth/role/grant", "etcdserverpb.Auth/RoleGrantPermission", Serve::Auth(node::<AuthRoleGrantPermissionRequest>)),
    ("auth/role/revoke", "etcdserverpb.Auth/RoleRevokePermission", Serve::Auth(node::<AuthRoleRevokePermissionRequest>)),
    ("lock/lock", "v3lockpb.Lock/Lock", Serve::Lock),
    ("lock/unlock", "v3lockpb.Lock/Unlock", Serve::Unlock),
    ("election/campaign", "v3electionpb.Election/Campaign", Serve::Campaign),
    ("election/proclaim", "v3electionpb.Election/Proclaim", Serve::Proclaim),
    ("election/leader", "v3electionpb.Election/Leader", Serve::Leader),
    ("election/observe", "v3electionpb.Election/Observe", Serve::Observe),
    ("election/resign", "v3electionpb.Election/Resign", Serve::Resign),
];

/// A route with its request and response types resolved.
struct Route {
    path: &'static str,
    input: MessageDescriptor,
    output: MessageDescriptor,
    serve: Serve,
}

/// What a request is answered with: one response, or a stream of them (each encoded).
enum Reply {
    One(Vec<u8>),
    Stream(BoxStream<'static, Result<Vec<u8>, Status>>),
}

/// The gateway: its routes and the services behind them.
pub struct Gateway {
    routes: Vec<Route>,
    driver: DriverHandle,
    watch: WatchHandle,
    recipes: RecipeServices,
    maintenance: MaintenanceService,
    auth: AuthService,
    /// The most request bytes read, as gRPC's receive limit.
    body_max: usize,
}

impl Gateway {
    pub fn new(
        driver: DriverHandle,
        watch: WatchHandle,
        recipes: RecipeServices,
        maintenance: MaintenanceService,
        auth: AuthService,
        body_max: usize,
    ) -> Result<Gateway, String> {
        let pool = DescriptorPool::decode(DESCRIPTORS)
            .map_err(|e| format!("the gateway's descriptors do not load: {e}"))?;
        let routes = ROUTES
            .iter()
            .map(|&(path, method, serve)| {
                let (service, name) = method.split_once('/').unwrap_or((method, ""));
                let method = pool
                    .get_service_by_name(service)
                    .and_then(|s| s.methods().find(|m| m.name() == name))
                    .ok_or_else(|| format!("the gateway's method {service}/{name} is unknown"))?;
                Ok(Route {
                    path,
                    input: method.input(),
                    output: method.output(),
                    serve,
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(Gateway {
            routes,
            driver,
            watch,
            recipes,
            maintenance,
            auth,
            body_max,
        })
    }

    /// Whether `path` is the gateway's to answer.
    pub fn owns(path: &str) -> bool {
        PREFIXES.iter().any(|prefix| path.starts_with(prefix))
    }

    /// Answers one HTTP request under the gateway's prefixes.
    pub async fn answer<B>(self: Arc<Self>, request: Request<B>) -> Response<BoxBody>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let path = request.uri().path();
        let rest = PREFIXES.iter().find_map(|p| path.strip_prefix(p));
        let Some(index) = rest.and_then(|rest| self.routes.iter().position(|r| r.path == rest))
        else {
            return plain(StatusCode::NOT_FOUND, "Not Found\n");
        };
        if request.method() != http::Method::POST {
            return plain(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n");
        }
        let route = &self.routes[index];
        let credentials = credentials(&request);
        let streaming = matches!(
            route.serve,
            Serve::Watch | Serve::KeepAlive | Serve::Observe | Serve::Snapshot
        );
        let mut body = JsonBody {
            body: request.into_body().map_err(Into::into).boxed_unsync(),
            input: route.input.clone(),
            streaming,
            held: BytesMut::new(),
            ended: false,
            max: self.body_max,
        };
        let first = match body.next().await {
            Ok(first) => first.unwrap_or_default(),
            Err(refused) => return error_response(&refused),
        };
        match self.clone().serve(index, first, body, credentials).await {
            Ok(Reply::One(bytes)) => match self.to_json(index, &bytes) {
                Ok(json) => json_response(json.into_bytes()),
                Err(e) => error_response(&e),
            },
            Ok(Reply::Stream(responses)) => self.stream_response(index, responses),
            Err(refused) => error_response(&refused),
        }
    }

    /// Serves route `index`'s request (`first`, encoded), and for a client stream the
    /// requests that follow it in `rest`.
    async fn serve(
        self: Arc<Self>,
        index: usize,
        first: Vec<u8>,
        rest: JsonBody,
        credentials: Option<Credentials>,
    ) -> Result<Reply, Status> {
        let first = &first[..];
        match self.routes[index].serve {
            Serve::Node(decode) => {
                let request = decode(first).map_err(invalid)?;
                let response = self.driver.call_any_as(request, credentials).await;
                let response = response.map_err(status)?;
                Ok(Reply::One(response.encode_to_vec()))
            }
            Serve::KeepAlive => Ok(Reply::Stream(self.keep_alives(first, rest)?)),
            Serve::Watch => {
                let watch = self.watch_stream(first, rest, credentials);
                watch.await.map(Reply::Stream)
            }
            Serve::Lock => one(Lock::lock(&self.recipes, decoded(first, &credentials)?).await),
            Serve::Unlock => one(Lock::unlock(&self.recipes, decoded(first, &credentials)?).await),
            Serve::Campaign => {
                one(Election::campaign(&self.recipes, decoded(first, &credentials)?).await)
            }
            Serve::Proclaim => {
                one(Election::proclaim(&self.recipes, decoded(first, &credentials)?).await)
            }
            Serve::Leader => {
                one(Election::leader(&self.recipes, decoded(first, &credentials)?).await)
            }
            Serve::Resign => {
                one(Election::resign(&self.recipes, decoded(first, &credentials)?).await)
            }
            Serve::Observe => {
                let leaders =
                    Election::observe(&self.recipes, decoded(first, &credentials)?).await?;
                Ok(encoded_stream(leaders.into_inner()))
            }
            Serve::Snapshot => {
                let request = decoded::<SnapshotRequest>(first, &credentials)?;
                let chunks = Maintenance::snapshot(&self.maintenance, request).await?;
                Ok(encoded_stream(chunks.into_inner()))
            }
            Serve::Auth(decode) => {
                let request = self.auth.hashed(decode(first).map_err(invalid)?).await?;
                let response = self.driver.call_any_as(request, credentials).await;
                Ok(Reply::One(response.map_err(status)?.encode_to_vec()))
            }
            Serve::Authenticate => {
                let request = AuthenticateRequest::decode(first).map_err(invalid)?;
                Ok(Reply::One(self.auth.login(&request).await?.encode_to_vec()))
            }
        }
    }

    /// LeaseKeepAlive: each request of the body renewed in turn, its answer a line; the stream
    /// ends after the body's last request, as etcd's ends when the client closes its side.
    fn keep_alives(
        self: Arc<Self>,
        first: &[u8],
        rest: JsonBody,
    ) -> Result<BoxStream<'static, Result<Vec<u8>, Status>>, Status> {
        let first = LeaseKeepAliveRequest::decode(first).map_err(invalid)?;
        let requests = futures_util::stream::once(async move { Ok(first) })
            .chain(rest.decoded::<LeaseKeepAliveRequest>());
        let driver = self.driver.clone();
        Ok(requests
            .then(move |request| {
                let driver = driver.clone();
                async move {
                    let response = driver.call(request?).await.map_err(status)?;
                    Ok(response.encode_to_vec())
                }
            })
            .boxed())
    }

    /// Watch: a stream of the watch task's, the body's requests sent on it as they arrive; it
    /// lasts until the client goes away, as etcd's watch streams outlive a half-close.
    async fn watch_stream(
        self: Arc<Self>,
        first: &[u8],
        rest: JsonBody,
        credentials: Option<Credentials>,
    ) -> Result<BoxStream<'static, Result<Vec<u8>, Status>>, Status> {
        let me = self.driver.call(StatusRequest {}).await;
        if me.is_ok_and(|s| s.is_learner) {
            return Err(status(EtcdError::NotSupportedForLearner));
        }
        let first = WatchRequest::decode(first).map_err(invalid)?;
        let watch = self.watch.internal(&self.driver, Vec::new()).await?;
        let requests = watch.requests();
        let caller = WatchCaller::new(self.driver.clone(), credentials);
        requests.send_as(first, &caller).await?;
        tokio::spawn(async move {
            let mut rest = std::pin::pin!(rest.decoded::<WatchRequest>());
            while let Some(Ok(request)) = rest.next().await {
                if requests.send_as(request, &caller).await.is_err() {
                    return;
                }
            }
        });
        Ok(futures_util::stream::unfold(watch, |mut watch| async move {
            let response = watch.next().await;
            Some((Ok(response.encode_to_vec()), watch))
        })
        .boxed())
    }

    /// The JSON of a response of route `index` from its encoding.
    fn to_json(&self, index: usize, bytes: &[u8]) -> Result<String, Status> {
        let message = DynamicMessage::decode(self.routes[index].output.clone(), bytes)
            .map_err(|e| Status::internal(e.to_string()))?;
        let options = SerializeOptions::new()
            .stringify_64_bit_integers(true)
            .use_enum_numbers(false)
            .use_proto_field_name(true)
            .skip_default_fields(true);
        let mut json = serde_json::Serializer::new(Vec::new());
        message
            .serialize_with_options(&mut json, &options)
            .map_err(|e| Status::internal(e.to_string()))?;
        String::from_utf8(json.into_inner()).map_err(|e| Status::internal(e.to_string()))
    }

    /// A stream's answer: a `{"result":...}` line per response, and an `{"error":...}` line
    /// if it fails once the answer has begun.
    fn stream_response(
        self: Arc<Self>,
        index: usize,
        mut responses: BoxStream<'static, Result<Vec<u8>, Status>>,
    ) -> Response<BoxBody> {
        let (lines, body) = mpsc::channel(STREAM_LINES_BUFFERED);
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    next = responses.next() => next,
                    () = lines.closed() => return,
                };
                let line = match next.map(|r| r.and_then(|bytes| self.to_json(index, &bytes))) {
                    Some(Ok(json)) => format!("{{\"result\":{json}}}\n"),
                    Some(Err(failed)) => stream_error_line(&failed),
                    None => return,
                };
                let failed = line.starts_with("{\"error\"");
                if lines.send(Bytes::from(line)).await.is_err() || failed {
                    return;
                }
            }
        });
        let mut response = Response::new(tonic::body::boxed(Lines(body)));
        set_json_headers(&mut response);
        response
    }
}

/// The request's decoding, for a service generated by tonic.
/// The request a tonic-generated service takes, with the caller's token in its metadata.
fn decoded<R: Message + Default>(
    bytes: &[u8],
    credentials: &Option<Credentials>,
) -> Result<tonic::Request<R>, Status> {
    let mut request = R::decode(bytes).map(tonic::Request::new).map_err(invalid)?;
    if let Some(Credentials::Token(token)) = credentials {
        if let Ok(value) = token.parse() {
            request.metadata_mut().insert("token", value);
        }
    }
    Ok(request)
}

fn one<M: Message>(answer: Result<tonic::Response<M>, Status>) -> Result<Reply, Status> {
    answer.map(|a| Reply::One(a.into_inner().encode_to_vec()))
}

fn encoded_stream<S, M>(responses: S) -> Reply
where
    S: futures_util::Stream<Item = Result<M, Status>> + Send + 'static,
    M: Message,
{
    Reply::Stream(responses.map(|r| r.map(|m| m.encode_to_vec())).boxed())
}

fn invalid(e: prost::DecodeError) -> Status {
    Status::invalid_argument(e.to_string())
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body read as consecutive JSON values, each a request message; at most `max`
/// bytes of it are held at once.
struct JsonBody {
    body: UnsyncBoxBody<Bytes, BoxError>,
    input: MessageDescriptor,
    /// Whether the call is a stream's.
    streaming: bool,
    held: BytesMut,
    ended: bool,
    max: usize,
}

impl JsonBody {
    /// The next request's protobuf encoding; `None` once the body has ended. grpc-gateway's
    /// words for JSON it cannot read are Go's; these are serde_json's.
    async fn next(&mut self) -> Result<Option<Vec<u8>>, Status> {
        loop {
            let mut values =
                serde_json::Deserializer::from_slice(&self.held).into_iter::<serde_json::Value>();
            match values.next() {
                Some(Ok(value)) => {
                    let used = values.byte_offset();
                    self.held.advance(used);
                    let options = DeserializeOptions::new().deny_unknown_fields(false);
                    let message = DynamicMessage::deserialize_with_options(
                        self.input.clone(),
                        value,
                        &options,
                    )
                    .map_err(|e| self.unreadable(e))?;
                    return Ok(Some(message.encode_to_vec()));
                }
                // A value cut short waits for the rest of the body.
                Some(Err(e)) if !e.is_eof() || self.ended => return Err(self.unreadable(e)),
                None if self.ended => return Ok(None),
                _ => self.read_more().await?,
            }
        }
    }

    /// grpc-gateway reports JSON it cannot read as InvalidArgument for a unary call and as
    /// Unknown for a stream.
    fn unreadable(&self, e: impl std::fmt::Display) -> Status {
        let code = if self.streaming {
            Code::Unknown
        } else {
            Code::InvalidArgument
        };
        Status::new(code, e.to_string())
    }

    async fn read_more(&mut self) -> Result<(), Status> {
        match self.body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    self.held.extend_from_slice(&data);
                }
                if self.held.len() > self.max {
                    // As gRPC's receive limit refuses the message grpc-gateway would pass on.
                    return Err(Status::resource_exhausted(format!(
                        "grpc: received message larger than max ({} vs. {})",
                        self.held.len(),
                        self.max
                    )));
                }
                Ok(())
            }
            Some(Err(e)) => Err(self.unreadable(e)),
            None => {
                self.ended = true;
                Ok(())
            }
        }
    }

    /// The rest of the body's requests, decoded as `R`; an unreadable one ends the stream
    /// with its error.
    fn decoded<R: Message + Default>(self) -> impl futures_util::Stream<Item = Result<R, Status>> {
        futures_util::stream::unfold(Some(self), |body| async move {
            let mut body = body?;
            match body.next().await {
                Ok(Some(bytes)) => Some((R::decode(&bytes[..]).map_err(invalid), Some(body))),
                Ok(None) => None,
                Err(e) => Some((Err(e), None)),
            }
        })
    }
}

/// A stream's response lines as they come, as a response body.
struct Lines(mpsc::Receiver<Bytes>);

impl Body for Lines {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        self.0
            .poll_recv(cx)
            .map(|line| line.map(|l| Ok(Frame::data(l))))
    }
}

/// The HTTP status grpc-gateway (v1, as etcd 3.4 and 3.5 embed it) gives a gRPC code.
fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A failed call's answer: `{"error":...,"message":...,"code":...}`, in that order.
fn error_response(failed: &Status) -> Response<BoxBody> {
    let message = serde_json::Value::from(failed.message());
    let code = failed.code() as i32;
    let body = format!(r#"{{"error":{message},"message":{message},"code":{code}}}"#);
    let mut response = Response::new(full(Bytes::from(body)));
    *response.status_mut() = http_status(failed.code());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The line that ends a stream which failed after its answer began.
fn stream_error_line(failed: &Status) -> String {
    let http = http_status(failed.code());
    let line = serde_json::json!({"error": {
        "grpc_code": failed.code() as i32,
        "http_code": http.as_u16(),
        "message": failed.message(),
        "http_status": http.canonical_reason().unwrap_or(""),
    }});
    format!("{line}\n")
}

fn json_response(body: Vec<u8>) -> Response<BoxBody> {
    let mut response = Response::new(full(Bytes::from(body)));
    set_json_headers(&mut response);
    response
}

/// The headers etcd's gateway answers a call with: its content type, and the gRPC content
/// type it passes on as metadata.
fn set_json_headers(response: &mut Response<BoxBody>) {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        "grpc-metadata-content-type",
        HeaderValue::from_static("application/grpc"),
    );
}

fn plain(code: StatusCode, text: &'static str) -> Response<BoxBody> {
    let mut response = Response::new(full(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = code;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn full(bytes: Bytes) -> BoxBody {
    tonic::body::boxed(
        http_body_util::Full::new(bytes).map_err(|never| -> Status { match never {} }),
    )
}
