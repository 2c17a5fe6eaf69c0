//! The replicated state as bytes: `detcdpb.StateSnapshot` (proto/detcdpb/state_snapshot.proto),
//! one section per state machine, for raft snapshots and restart.
//!
//! A [`StateView`] freezes the state in O(1) (both state machines are persistent maps), so the
//! node hands it to the driver and the driver encodes it off the node's thread, streaming the
//! key space section key by key. Encoding is deterministic; decoding trusts nothing and checks
//! every state machine's invariants, including those between them (each key's lease exists).

use std::cell::OnceCell;
use std::io::{self, Write};

use prost::encoding::{encode_key, encode_varint, encoded_len_varint, key_len, WireType};
use prost::Message;
use thiserror::Error;

use super::State;
use crate::alarm::Alarms;
use crate::auth::Auth;
use crate::lease::Leases;
use crate::members::Members;
use crate::mvcc::{ColdRead, KeySpace, KeySpaceView, NoColdValues, SnapshotDecodeError};
use crate::proto::detcdpb::StateSnapshot;

/// The format this code writes and reads. Version 1 was the key space alone; version 2 added
/// the leases; version 3 the members and alarms; version 4 the auth store (so a build that
/// does not know it refuses such a snapshot instead of dropping the users). Version 3 is read
/// as a store without auth.
const FORMAT_VERSION: u32 = 4;
const FORMAT_VERSION_WITHOUT_AUTH: u32 = 3;
const VERSION_FIELD: u32 = 1;
const KV_FIELD: u32 = 2;
const LEASES_FIELD: u32 = 3;
const MEMBERS_FIELD: u32 = 4;
const ALARMS_FIELD: u32 = 5;
const AUTH_FIELD: u32 = 6;

#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum StateSnapshotError {
    #[error("state snapshot is not a valid protobuf message: {0}")]
    Malformed(String),
    #[error("state snapshot format version {0} is not supported (expected {FORMAT_VERSION})")]
    UnsupportedVersion(u32),
    #[error(transparent)]
    KeySpace(#[from] SnapshotDecodeError),
    #[error("state snapshot's lease table is impossible: {0}")]
    Leases(String),
    #[error("state snapshot's member list is impossible: {0}")]
    Members(String),
    #[error("state snapshot's alarms are impossible: {0}")]
    Alarms(String),
    #[error("state snapshot's auth store is impossible: {0}")]
    Auth(String),
}

/// The state as it was at one moment, for encoding elsewhere while the state moves on.
#[derive(Clone, Debug)]
pub struct StateView {
    kv: KeySpaceView,
    leases: Leases,
    members: Members,
    alarms: Alarms,
    auth: Auth,
    /// The key space section's length and the sections after it, each computed once: a
    /// snapshot file's header needs the whole length before the sections are written, and
    /// computing them again walked every key a second time.
    kv_len: OnceCell<usize>,
    trailing: OnceCell<Vec<u8>>,
}

fn delimited_header(tag: u32, len: usize, out: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(len as u64, out);
}

impl StateView {
    /// The key space revision this view froze.
    pub fn revision(&self) -> i64 {
        self.kv.revision()
    }

    fn leading_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        prost::encoding::uint32::encode(VERSION_FIELD, &FORMAT_VERSION, &mut out);
        out
    }

    fn kv_len(&self) -> usize {
        *self.kv_len.get_or_init(|| self.kv.encoded_len())
    }

    fn trailing_bytes(&self) -> &[u8] {
        self.trailing.get_or_init(|| self.encode_trailing())
    }

    /// The sections after the key space: leases, members, alarms, auth.
    fn encode_trailing(&self) -> Vec<u8> {
        let mut out = Vec::new();
        prost::encoding::message::encode(LEASES_FIELD, &self.leases.to_snapshot(), &mut out);
        prost::encoding::message::encode(MEMBERS_FIELD, &self.members.to_snapshot(), &mut out);
        prost::encoding::message::encode(ALARMS_FIELD, &self.alarms.to_snapshot(), &mut out);
        prost::encoding::message::encode(AUTH_FIELD, &self.auth.to_snapshot(), &mut out);
        out
    }

    /// Exactly how many bytes [`StateView::encode_to`] writes.
    pub fn encoded_len(&self) -> usize {
        let kv = self.kv_len();
        self.leading_bytes().len()
            + key_len(KV_FIELD)
            + encoded_len_varint(kv as u64)
            + kv
            + self.trailing_bytes().len()
    }

    /// Writes the state, the key space section streamed key by key (its cold values read
    /// through `cold`); the bytes equal one `StateSnapshot` message.
    pub fn encode_to(&self, out: &mut dyn Write, cold: &dyn ColdRead) -> io::Result<()> {
        let mut head = self.leading_bytes();
        delimited_header(KV_FIELD, self.kv_len(), &mut head);
        out.write_all(&head)?;
        self.kv.encode_to(out, cold)?;
        out.write_all(self.trailing_bytes())
    }

    /// The whole state as bytes; equal states give equal bytes.
    pub fn encode(&self, cold: &dyn ColdRead) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_to(&mut out, cold)?;
        Ok(out)
    }
}

impl State {
    /// The state right now, frozen, in O(1).
    pub fn view(&self) -> StateView {
        StateView {
            kv: self.kv.view(),
            leases: self.leases.clone(),
            members: self.members.clone(),
            alarms: self.alarms.clone(),
            auth: self.auth.clone(),
            kv_len: OnceCell::new(),
            trailing: OnceCell::new(),
        }
    }

    /// The whole state as bytes, for a state that keeps every value in memory.
    pub fn encode_snapshot(&self) -> Vec<u8> {
        self.view()
            .encode(&NoColdValues)
            .expect("a state without cold values encodes from memory")
    }

    /// Rebuilds the state from [`StateView::encode_to`] output, validating everything.
    pub fn decode_snapshot(bytes: &[u8]) -> Result<State, StateSnapshotError> {
        let snapshot = StateSnapshot::decode(bytes)
            .map_err(|e| StateSnapshotError::Malformed(e.to_string()))?;
        let known = [FORMAT_VERSION, FORMAT_VERSION_WITHOUT_AUTH];
        if !known.contains(&snapshot.format_version) {
            return Err(StateSnapshotError::UnsupportedVersion(
                snapshot.format_version,
            ));
        }
        let kv = KeySpace::from_snapshot(snapshot.kv.unwrap_or_default())?;
        let leases = Leases::from_snapshot(snapshot.leases.unwrap_or_default(), &kv)
            .map_err(StateSnapshotError::Leases)?;
        let members = Members::from_snapshot(snapshot.members.unwrap_or_default())
            .map_err(StateSnapshotError::Members)?;
        let alarms = Alarms::from_snapshot(snapshot.alarms.unwrap_or_default())
            .map_err(StateSnapshotError::Alarms)?;
        let auth = Auth::from_snapshot(snapshot.auth).map_err(StateSnapshotError::Auth)?;
        Ok(State {
            kv,
            leases,
            members,
            alarms,
            auth,
        })
    }
}
