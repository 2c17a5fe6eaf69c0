//! The Cluster and Maintenance services: each call is one request to the node (membership
//! changes through raft, status and hashes from this member's state), answered with etcd's
//! messages and codes.

use std::pin::Pin;

use futures_util::stream::Stream;
use tonic::{Request, Response, Status};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::driver::DriverHandle;
use super::grpc::{metadata_credentials, status, unary};
use crate::error::EtcdError;
use crate::proto::detcdpb::AuthorizeRequest;
use crate::proto::etcdserverpb::cluster_server::Cluster;
use crate::proto::etcdserverpb::maintenance_server::Maintenance;
use crate::proto::etcdserverpb::{
    AlarmRequest, AlarmResponse, DefragmentRequest, DefragmentResponse, DowngradeRequest,
    DowngradeResponse, HashKvRequest, HashKvResponse, HashRequest, HashResponse, MemberAddRequest,
    MemberAddResponse, MemberListRequest, MemberListResponse, MemberPromoteRequest,
    MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse, MemberUpdateRequest,
    MemberUpdateResponse, MoveLeaderRequest, MoveLeaderResponse, SnapshotRequest, SnapshotResponse,
    StatusRequest, StatusResponse,
};
use crate::state::backup;

#[derive(Clone)]
pub struct ClusterService {
    driver: DriverHandle,
}

impl ClusterService {
    pub fn new(driver: DriverHandle) -> ClusterService {
        ClusterService { driver }
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        request: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        unary(&self.driver, request).await
    }

    async fn member_remove(
        &self,
        request: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        unary(&self.driver, request).await
    }

    async fn member_update(
        &self,
        request: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        unary(&self.driver, request).await
    }

    async fn member_list(
        &self,
        request: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        unary(&self.driver, request).await
    }

    async fn member_promote(
        &self,
        request: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        unary(&self.driver, request).await
    }
}

#[derive(Clone)]
pub struct MaintenanceService {
    driver: DriverHandle,
}

impl MaintenanceService {
    pub fn new(driver: DriverHandle) -> MaintenanceService {
        MaintenanceService { driver }
    }
}

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<SnapshotResponse, Status>> + Send>>;

/// etcd streams snapshots in 32 KiB chunks.
const SNAPSHOT_CHUNK_BYTES: usize = 32 * 1024;
/// Chunks encoded ahead of a client that reads slowly.
const SNAPSHOT_CHUNKS_BUFFERED: usize = 8;

/// Cuts what the backup writer writes into chunks for the stream, blocking while the stream's
/// buffer is full.
struct ChunkWriter {
    tx: mpsc::Sender<Result<SnapshotResponse, Status>>,
    chunk: Vec<u8>,
    remaining: u64,
}

impl ChunkWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.chunk.is_empty() {
            return Ok(());
        }
        let blob = std::mem::replace(&mut self.chunk, Vec::with_capacity(SNAPSHOT_CHUNK_BYTES));
        self.remaining = self.remaining.saturating_sub(blob.len() as u64);
        let response = SnapshotResponse {
            remaining_bytes: self.remaining,
            blob: blob.into(),
            ..SnapshotResponse::default()
        };
        self.tx
            .blocking_send(Ok(response))
            .map_err(|_| std::io::Error::other("the client went away"))
    }
}

impl std::io::Write for ChunkWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = buf.len().min(SNAPSHOT_CHUNK_BYTES - self.chunk.len());
        self.chunk.extend_from_slice(&buf[..n]);
        if self.chunk.len() == SNAPSHOT_CHUNK_BYTES {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn alarm(
        &self,
        request: Request<AlarmRequest>,
    ) -> Result<Response<AlarmResponse>, Status> {
        unary(&self.driver, request).await
    }

    async fn status(
        &self,
        request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        unary(&self.driver, request).await
    }

    async fn defragment(
        &self,
        request: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        unary(&self.driver, request).await
    }

    async fn hash(&self, request: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        unary(&self.driver, request).await
    }

    async fn hash_kv(
        &self,
        request: Request<HashKvRequest>,
    ) -> Result<Response<HashKvResponse>, Status> {
        unary(&self.driver, request).await
    }

    type SnapshotStream = SnapshotStream;

    /// The whole state as this member has applied it, as a backup file (`state::backup`),
    /// streamed in chunks while the member goes on serving: the view is frozen in O(1), and
    /// encoding it (reading superseded values from their segments) runs on a blocking thread
    /// that waits whenever the client is slow to read.
    async fn snapshot(
        &self,
        request: Request<SnapshotRequest>,
    ) -> Result<Response<SnapshotStream>, Status> {
        // A backup holds every key: only the root role may take one while auth is on.
        let admin = AuthorizeRequest {
            admin: true,
            ..AuthorizeRequest::default()
        };
        let credentials = metadata_credentials(&request);
        self.driver
            .call_as(admin, credentials)
            .await
            .map_err(status)?;
        let (view, cold) = self
            .driver
            .state_view()
            .await
            .ok_or_else(|| status(EtcdError::Stopped))?;
        let total = backup::backup_len(&view) as u64;
        let (tx, rx) = mpsc::channel(SNAPSHOT_CHUNKS_BUFFERED);
        tokio::task::spawn_blocking(move || {
            let mut out = ChunkWriter {
                tx,
                chunk: Vec::with_capacity(SNAPSHOT_CHUNK_BYTES),
                remaining: total,
            };
            let written = backup::write_backup(&view, &mut out, &cold).and_then(|()| out.send());
            if let Err(e) = written {
                let _ = out.tx.blocking_send(Err(Status::internal(format!(
                    "detcd: writing the snapshot failed: {e}"
                ))));
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn move_leader(
        &self,
        request: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        unary(&self.driver, request).await
    }

    async fn downgrade(
        &self,
        request: Request<DowngradeRequest>,
    ) -> Result<Response<DowngradeResponse>, Status> {
        unary(&self.driver, request).await
    }
}
