//! Joining a running cluster: a member started with `--initial-cluster-state existing` asks the
//! members it was given for the cluster's member list, to learn the cluster's id and its own
//! member id (chosen when `member add` ran), as etcd's new members ask `/members`.
//!
//! The question is a handshake whose cluster, sender and receiver are all zero; the answer is
//! one message (frames as usual) holding a `detcdpb.MemberTable`, after which the listener
//! closes the connection. The board also lets the listener turn away a member the cluster
//! removed, with a one-byte notice the dialer hands to its node.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use prost::Message as _;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::wire::{self, Handshake, Kind};
use crate::node::MemberId;
use crate::proto::detcdpb::MemberTable;
use crate::proto::etcdserverpb::Member;
use crate::server::tls::PeerConnector;

/// How long one member may take to answer.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);
/// The largest member list a joining member reads.
const MEMBER_LIST_BYTES_MAX: usize = 4 << 20;

/// The member list as this member last applied it, shared with the peer listener.
#[derive(Default)]
pub struct MemberBoard {
    table: Mutex<MemberTable>,
}

impl MemberBoard {
    pub fn set(&self, cluster_id: u64, members: Vec<Member>, removed: Vec<MemberId>) {
        let mut table = self.table.lock().expect("member board lock");
        *table = MemberTable {
            members,
            removed,
            cluster_id,
        };
    }

    /// Whether the cluster removed `id` (as far as this member has applied).
    pub fn is_removed(&self, id: MemberId) -> bool {
        let table = self.table.lock().expect("member board lock");
        table.removed.binary_search(&id).is_ok()
    }

    /// Tells a removed member that dialed in so, and closes the connection: it may never
    /// apply its own removal (a member that was down when it was removed never will).
    pub(super) async fn refuse_removed(&self, mut stream: impl AsyncWrite + Unpin) {
        let _ = stream.write_all(&[wire::REMOVED_NOTICE]).await;
        let _ = stream.shutdown().await;
    }

    fn encoded(&self) -> Vec<u8> {
        self.table
            .lock()
            .expect("member board lock")
            .encode_to_vec()
    }

    /// Answers a join question on `stream`, whose handshake was read already.
    pub(super) async fn answer(&self, mut stream: impl AsyncWrite + Unpin) {
        let bytes = self.encoded();
        if wire::write_message(&mut stream, &bytes, Kind::Raft)
            .await
            .is_ok()
        {
            let _ = stream.flush().await;
        }
        let _ = stream.shutdown().await;
    }
}

/// Where each member listens for peers (`host:port` of its first peer URL).
pub fn peer_addresses(members: &[Member]) -> BTreeMap<MemberId, String> {
    members
        .iter()
        .filter_map(|m| {
            let url = m.peer_ur_ls.first()?;
            let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
            Some((m.id, rest.trim_end_matches('/').to_string()))
        })
        .collect()
}

/// Asks each address in turn for the member list (with TLS if `tls` is given); the first
/// answer wins.
pub async fn lookup(addrs: &[String], tls: Option<&PeerConnector>) -> Result<MemberTable, String> {
    let mut errors = Vec::new();
    for addr in addrs {
        match tokio::time::timeout(LOOKUP_TIMEOUT, ask(addr, tls)).await {
            Ok(Ok(table)) if !table.members.is_empty() => return Ok(table),
            Ok(Ok(_)) => errors.push(format!("{addr}: no members yet")),
            Ok(Err(e)) => errors.push(format!("{addr}: {e}")),
            Err(_) => errors.push(format!("{addr}: no answer in {LOOKUP_TIMEOUT:?}")),
        }
    }
    Err(format!(
        "cannot get the member list of the cluster to join ({})",
        errors.join("; ")
    ))
}

async fn ask(addr: &str, tls: Option<&PeerConnector>) -> Result<MemberTable, String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    match tls {
        None => ask_over(stream).await,
        Some(tls) => ask_over(tls.connect(addr, stream).await.map_err(|e| e.to_string())?).await,
    }
}

async fn ask_over(mut stream: impl AsyncRead + AsyncWrite + Unpin) -> Result<MemberTable, String> {
    stream
        .write_all(&Handshake::join_question().encode())
        .await
        .map_err(|e| e.to_string())?;
    stream.flush().await.map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream);
    let (_, bytes) = wire::read_message(&mut reader, MEMBER_LIST_BYTES_MAX)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the member closed the connection without answering")?;
    MemberTable::decode(bytes.as_slice()).map_err(|e| e.to_string())
}
