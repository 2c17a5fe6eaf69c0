//! The thread the peer connections run on, apart from the client port's runtime.
//!
//! Raft's messages (appends, their acknowledgements, heartbeats) reach a member through its
//! peer connections. On the client port's workers they waited behind whatever clients made
//! those workers do: under 10,000 watchers, a follower's node thread received nothing for
//! 66-77 ms at a time while its client-port workers wrote watch responses without a break, and
//! the puts clients sent through it waited as long. Peer traffic is light (a few messages per
//! write, batched), so one thread serves it all, and client load cannot starve raft.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// A running peer thread; dropping it stops the thread, closing every connection and listener
/// spawned on it.
pub struct PeerThread {
    handle: Handle,
    _stop: oneshot::Sender<()>,
}

impl PeerThread {
    pub fn start() -> Result<PeerThread, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("starting the peer runtime: {e}"))?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("detcd-peer".into())
            .spawn(move || {
                // Returns once the `PeerThread` is dropped; dropping the runtime then ends
                // every task on it.
                let _ = runtime.block_on(stopped);
            })
            .map_err(|e| format!("starting the peer thread: {e}"))?;
        Ok(PeerThread {
            handle,
            _stop: stop,
        })
    }

    /// The runtime to spawn peer tasks on (and to enter where code spawns them itself).
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Binds `addrs` for peers, registered with this thread's runtime.
    pub fn bind(&self, addrs: &[SocketAddr]) -> Result<Vec<TcpListener>, String> {
        let _runtime = self.handle.enter();
        addrs
            .iter()
            .map(|addr| {
                let listener = std::net::TcpListener::bind(addr)
                    .and_then(|l| l.set_nonblocking(true).map(|()| l))
                    .and_then(TcpListener::from_std);
                listener.map_err(|e| format!("cannot listen for peers on {addr}: {e}"))
            })
            .collect()
    }
}
