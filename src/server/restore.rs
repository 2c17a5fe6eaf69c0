//! `detcd snapshot restore FILE`: a new member's data directory from a backup (what
//! `Maintenance/Snapshot` streamed, `etcdctl snapshot save` wrote), as `etcdutl snapshot
//! restore` makes one from an etcd backup. Every member of the new cluster is restored from the
//! same file with the same `--initial-cluster` and token, and then started as a new cluster.
//!
//! The directory holds the backup's key space and leases as a snapshot at raft index 1, with
//! the new cluster's members (ids from the flags, as a new cluster's) and no alarms, and a WAL
//! whose hard state commits it.

use std::path::Path;
use std::sync::mpsc;

use bytes::Bytes;
use raft::eraftpb::{ConfState, HardState, Snapshot, SnapshotMetadata};

use super::config::ServerConfig;
use super::disk::{self, DiskExecutor};
use crate::members::Members;
use crate::node::{DiskOp, IoId, SnapshotFile};
use crate::state::backup;
use crate::wal::{encode_record, Record};

/// The raft index and term the restored state sits at.
const RESTORED_INDEX: u64 = 1;
const RESTORED_TERM: u64 = 1;

pub fn restore(file: &Path, cfg: &ServerConfig) -> Result<(), String> {
    let bytes = std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let state = backup::read_backup(&bytes)
        .map_err(|e| format!("cannot restore {}: {e}", file.display()))?;
    if cfg.data_dir.join("member").exists() {
        return Err(format!(
            "data-dir {:?} exists",
            cfg.data_dir.display().to_string()
        ));
    }
    let members = Members::bootstrap(cfg.node.cluster_id, cfg.node.initial_members.clone());
    let state = state.restored_as(members);
    let mut meta = SnapshotMetadata {
        index: RESTORED_INDEX,
        term: RESTORED_TERM,
        ..SnapshotMetadata::default()
    };
    meta.set_conf_state(ConfState {
        voters: cfg.node.peers.clone(),
        ..ConfState::default()
    });
    let mut snapshot = Snapshot {
        data: Bytes::from(state.encode_snapshot()),
        ..Snapshot::default()
    };
    snapshot.set_metadata(meta);
    write_member_dir(cfg, &snapshot)?;
    println!(
        "restored snapshot {} into {} for member {:x} of cluster {:x}",
        file.display(),
        cfg.data_dir.display(),
        cfg.node.id,
        cfg.node.cluster_id
    );
    Ok(())
}

/// A fresh data directory holding `snapshot`, its WAL marker and a hard state committing it,
/// written through the disk executor as a running member writes them.
fn write_member_dir(cfg: &ServerConfig, snapshot: &Snapshot) -> Result<(), String> {
    let data_dir = &cfg.data_dir;
    let options = disk::DiskOptions {
        segment_bytes: cfg.wal_segment_bytes,
        wal_dir: cfg.wal_dir.clone(),
        unsafe_no_fsync: false,
    };
    let loaded = disk::load_with(data_dir, options)
        .map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
    let mut wal = Vec::new();
    let mut offset = loaded.recovered.wal_end_offset;
    let hard_state = HardState {
        term: RESTORED_TERM,
        vote: 0,
        commit: RESTORED_INDEX,
        ..HardState::default()
    };
    for record in [
        Record::HardState(hard_state),
        Record::Snapshot {
            index: RESTORED_INDEX,
            term: RESTORED_TERM,
        },
    ] {
        offset += encode_record(offset, &record, &mut wal) as u64;
    }
    let (done, completions) = mpsc::channel();
    let executor = DiskExecutor::spawn(loaded.files, move |io, result| {
        let _ = done.send((io, result));
    });
    executor.submit(
        IoId(1),
        DiskOp::SaveSnapshot {
            index: RESTORED_INDEX,
            term: RESTORED_TERM,
            file: SnapshotFile::received(snapshot),
        },
    );
    executor.submit(
        IoId(2),
        DiskOp::AppendWal {
            data: Bytes::from(wal),
            sync: true,
        },
    );
    for _ in 0..2 {
        let (io, result) = completions
            .recv()
            .map_err(|_| "the disk thread stopped".to_string())?;
        result.map_err(|e| format!("writing {} (operation {}): {e}", data_dir.display(), io.0))?;
    }
    Ok(())
}
