//! etcd's `v3lockpb.Lock` and `v3electionpb.Election` services. Each request runs its recipe
//! (`crate::recipes`, the same step machines the simulator checks) against this member: its
//! requests go through the driver as any client's, and it waits on a watch stream of the
//! member's watch task, so a waiting request holds no thread.

use std::pin::Pin;

use futures_util::stream::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::driver::DriverHandle;
use super::grpc::metadata_credentials;
use super::watch::{InternalWatch, WatchHandle};
use crate::api::{ClientRequest, Credentials};
use crate::error::EtcdError;
use crate::proto::etcdserverpb::WatchResponse;
use crate::proto::v3electionpb::election_server::Election;
use crate::proto::v3electionpb::{
    CampaignRequest, CampaignResponse, LeaderRequest, LeaderResponse, ProclaimRequest,
    ProclaimResponse, ResignRequest, ResignResponse,
};
use crate::proto::v3lockpb::lock_server::Lock;
use crate::proto::v3lockpb::{LockRequest, LockResponse, UnlockRequest, UnlockResponse};
use crate::recipes::{self, Recipe, RecipeBugs, RecipeError, Step};

/// Leader changes buffered for an Observe stream whose client is slow to read; past them the
/// recipe waits, and its watcher's events wait in the hub (bounded there).
const OBSERVED_BUFFERED_MAX: usize = 16;

/// What the services need of the member.
#[derive(Clone)]
pub struct RecipeServices {
    driver: DriverHandle,
    watch: WatchHandle,
}

impl RecipeServices {
    pub fn new(driver: DriverHandle, watch: WatchHandle) -> RecipeServices {
        RecipeServices { driver, watch }
    }

    /// Runs a recipe to its final answer.
    async fn unary<R: Recipe>(
        &self,
        recipe: R,
        credentials: Option<Credentials>,
    ) -> Result<Response<R::Answer>, Status> {
        self.run(recipe, None, credentials)
            .await
            .map(Response::new)
            .map_err(status)
    }

    /// Runs `recipe` until it answers; answers it emits on the way go to `emitted`. If this
    /// future is dropped (the client went away), what the recipe would leave behind is undone.
    async fn run<R: Recipe>(
        &self,
        mut recipe: R,
        emitted: Option<&mpsc::Sender<Result<R::Answer, Status>>>,
        credentials: Option<Credentials>,
    ) -> Result<R::Answer, RecipeError> {
        let mut on_drop = Abandon {
            driver: self.driver.clone(),
            cleanup: None,
            credentials: credentials.clone(),
        };
        let mut stream: Option<InternalWatch> = None;
        let mut step = recipe.start();
        loop {
            on_drop.cleanup = recipe.abandon();
            step = match step {
                Step::Call(request) => {
                    let reply = self.driver.call_any_as(request, credentials.clone()).await;
                    recipe.on_reply(reply)
                }
                Step::Watch(creates) => {
                    drop(stream.take());
                    match self.watch.internal(&self.driver, creates).await {
                        Ok(opened) => stream = Some(opened),
                        Err(_) => return Err(RecipeError::Etcd(EtcdError::Stopped)),
                    }
                    Step::Wait
                }
                Step::Wait => {
                    let response = tokio::select! {
                        response = next(stream.as_mut()) => response,
                        () = client_gone(emitted) => {
                            return Err(RecipeError::Etcd(EtcdError::Canceled));
                        }
                    };
                    recipe.on_watch(&response)
                }
                Step::Emit(answer, then) => {
                    if let Some(emitted) = emitted {
                        if emitted.send(Ok(answer)).await.is_err() {
                            return Err(RecipeError::Etcd(EtcdError::Canceled));
                        }
                    }
                    *then
                }
                Step::Done(result) => {
                    on_drop.cleanup = None;
                    return result;
                }
            };
        }
    }
}

async fn next(stream: Option<&mut InternalWatch>) -> WatchResponse {
    match stream {
        Some(stream) => stream.next().await,
        None => WatchResponse {
            canceled: true,
            ..Default::default()
        },
    }
}

/// Resolves once a streaming recipe's client went away (never for a unary one: gRPC drops its
/// future instead).
async fn client_gone<A>(emitted: Option<&mpsc::Sender<A>>) {
    match emitted {
        Some(emitted) => emitted.closed().await,
        None => std::future::pending().await,
    }
}

/// etcd's recipes fail with plain errors, which gRPC reports as code Unknown with the message.
fn status(error: RecipeError) -> Status {
    Status::unknown(error.to_string())
}

/// Sends a recipe's cleanup if its request is dropped before the answer.
struct Abandon {
    driver: DriverHandle,
    cleanup: Option<ClientRequest>,
    credentials: Option<Credentials>,
}

impl Drop for Abandon {
    fn drop(&mut self) {
        let Some(cleanup) = self.cleanup.take() else {
            return;
        };
        let (driver, credentials) = (self.driver.clone(), self.credentials.take());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { driver.call_any_as(cleanup, credentials).await });
        }
    }
}

#[tonic::async_trait]
impl Lock for RecipeServices {
    async fn lock(&self, request: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        let credentials = metadata_credentials(&request);
        let lock = recipes::Lock::new(request.into_inner(), RecipeBugs::default());
        self.unary(lock, credentials).await
    }

    async fn unlock(
        &self,
        request: Request<UnlockRequest>,
    ) -> Result<Response<UnlockResponse>, Status> {
        self.unary(
            recipes::Unlock::new(request.get_ref().clone()),
            metadata_credentials(&request),
        )
        .await
    }
}

type ObserveStream = Pin<Box<dyn Stream<Item = Result<LeaderResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Election for RecipeServices {
    async fn campaign(
        &self,
        request: Request<CampaignRequest>,
    ) -> Result<Response<CampaignResponse>, Status> {
        self.unary(
            recipes::Campaign::new(request.get_ref().clone()),
            metadata_credentials(&request),
        )
        .await
    }

    async fn proclaim(
        &self,
        request: Request<ProclaimRequest>,
    ) -> Result<Response<ProclaimResponse>, Status> {
        self.unary(
            recipes::Proclaim::new(request.get_ref().clone()),
            metadata_credentials(&request),
        )
        .await
    }

    async fn leader(
        &self,
        request: Request<LeaderRequest>,
    ) -> Result<Response<LeaderResponse>, Status> {
        let credentials = metadata_credentials(&request);
        let leader = recipes::Leader::new(request.into_inner(), RecipeBugs::default());
        self.unary(leader, credentials).await
    }

    type ObserveStream = ObserveStream;

    async fn observe(
        &self,
        request: Request<LeaderRequest>,
    ) -> Result<Response<ObserveStream>, Status> {
        let credentials = metadata_credentials(&request);
        let observe = recipes::Observe::new(request.into_inner());
        let (tx, rx) = mpsc::channel(OBSERVED_BUFFERED_MAX);
        let services = self.clone();
        tokio::spawn(async move {
            // Observe only ends with an error (a stream that ends because its client went away
            // has nobody to tell).
            if let Err(error) = services.run(observe, Some(&tx), credentials).await {
                let _ = tx.send(Err(status(error))).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn resign(
        &self,
        request: Request<ResignRequest>,
    ) -> Result<Response<ResignResponse>, Status> {
        self.unary(
            recipes::Resign::new(request.get_ref().clone()),
            metadata_credentials(&request),
        )
        .await
    }
}
