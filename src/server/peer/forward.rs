//! Requests forwarded to the leader and its replies, as `detcdpb.ForwardMessage` bytes: the
//! payload of a peer frame with the FORWARD flag.

use prost::Message as _;

use crate::error::EtcdError;
use crate::node::{LeaderRequest, LeaderResponse, PeerMessage};
use crate::proto::detcdpb::{
    forward_message, forward_reply, forward_request, ForwardMessage, ForwardReply, ForwardRequest,
    Removed,
};

/// The bytes of a `Forward` or `ForwardReply`; `None` for a raft message.
pub(super) fn encode(msg: &PeerMessage) -> Option<Vec<u8>> {
    let kind = match msg {
        PeerMessage::Raft(_) => return None,
        PeerMessage::Removed => forward_message::Kind::Removed(Removed {}),
        PeerMessage::Forward { id, request } => forward_message::Kind::Request(ForwardRequest {
            id: *id,
            request: Some(match request {
                LeaderRequest::KeepAlive(r) => forward_request::Request::KeepAlive(*r),
                LeaderRequest::TimeToLive(r) => forward_request::Request::TimeToLive(*r),
                LeaderRequest::PromoteCheck(r) => forward_request::Request::PromoteCheck(*r),
            }),
        }),
        PeerMessage::ForwardReply { id, result } => forward_message::Kind::Reply(ForwardReply {
            id: *id,
            result: Some(match result {
                Ok(LeaderResponse::KeepAlive(r)) => forward_reply::Result::KeepAlive(*r),
                Ok(LeaderResponse::TimeToLive(r)) => forward_reply::Result::TimeToLive(r.clone()),
                Ok(LeaderResponse::PromoteReady(r)) => {
                    forward_reply::Result::PromoteReady(r.clone())
                }
                Err(e) => forward_reply::Result::Error(e.number()),
            }),
        }),
    };
    Some(ForwardMessage { kind: Some(kind) }.encode_to_vec())
}

/// Why forwarded bytes are not a message this member understands.
#[derive(Debug, thiserror::Error)]
pub enum ForwardDecodeError {
    #[error("undecodable forwarded message: {0}")]
    Protobuf(#[from] prost::DecodeError),
    #[error("forwarded message without a request or result")]
    Empty,
    #[error("forwarded reply with unknown error number {0}")]
    UnknownError(u32),
}

pub(super) fn decode(bytes: &[u8]) -> Result<PeerMessage, ForwardDecodeError> {
    let message = ForwardMessage::decode(bytes)?;
    match message.kind.ok_or(ForwardDecodeError::Empty)? {
        forward_message::Kind::Request(ForwardRequest { id, request }) => {
            let request = match request.ok_or(ForwardDecodeError::Empty)? {
                forward_request::Request::KeepAlive(r) => LeaderRequest::KeepAlive(r),
                forward_request::Request::TimeToLive(r) => LeaderRequest::TimeToLive(r),
                forward_request::Request::PromoteCheck(r) => LeaderRequest::PromoteCheck(r),
            };
            Ok(PeerMessage::Forward { id, request })
        }
        forward_message::Kind::Reply(ForwardReply { id, result }) => {
            let result = match result.ok_or(ForwardDecodeError::Empty)? {
                forward_reply::Result::KeepAlive(r) => Ok(LeaderResponse::KeepAlive(r)),
                forward_reply::Result::TimeToLive(r) => Ok(LeaderResponse::TimeToLive(r)),
                forward_reply::Result::PromoteReady(r) => Ok(LeaderResponse::PromoteReady(r)),
                forward_reply::Result::Error(n) => {
                    Err(EtcdError::from_number(n).ok_or(ForwardDecodeError::UnknownError(n))?)
                }
            };
            Ok(PeerMessage::ForwardReply { id, result })
        }
        forward_message::Kind::Removed(Removed {}) => Ok(PeerMessage::Removed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::etcdserverpb::{LeaseKeepAliveRequest, LeaseTimeToLiveResponse};

    #[test]
    fn forwarded_requests_and_replies_survive_the_wire() {
        let messages = [
            PeerMessage::Forward {
                id: 7,
                request: LeaderRequest::KeepAlive(LeaseKeepAliveRequest { id: 42 }),
            },
            PeerMessage::ForwardReply {
                id: 7,
                result: Ok(LeaderResponse::TimeToLive(LeaseTimeToLiveResponse {
                    id: 42,
                    ttl: 3,
                    granted_ttl: 10,
                    keys: vec!["k".into()],
                    header: None,
                })),
            },
            PeerMessage::ForwardReply {
                id: 8,
                result: Err(EtcdError::LeaseNotFound),
            },
        ];
        for msg in messages {
            let bytes = encode(&msg).expect("a forwarded message");
            assert_eq!(decode(&bytes).expect("decodes"), msg);
        }
    }
}
