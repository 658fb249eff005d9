//! What exists only while the relay is connected to Redis: the connections, the Redis process they
//! reach, the batches published on them and not yet confirmed (those of a lost link are found
//! again pending, journaled, by the next session), the read in flight, and the lease renewal. Dropping a session (the link is lost) ends all of it at once; nothing outlives it.

use std::sync::Arc;

use redis::aio::MultiplexedConnection;
use tokio::task::JoinHandle;

use crate::confirming::Confirming;
use crate::connection::{AllNodes, Connections};
use crate::delivery::Scripts;
use crate::fault::{Fault, LinkError};
use crate::flow::Flow;
use crate::lease::Lease;
use crate::reader::{Fetched, Reader};
use crate::replies::Listener;

/// A read on its way, with the connection it runs on.
pub(super) type ReadTask = JoinHandle<(Reader, Result<Vec<Fetched>, LinkError>)>;

/// What a session still has to do before it reads new entries, in this order: a fault sends it
/// back to the step it must redo (a vanished group to [`Setup::Group`], a refused step to
/// [`Setup::Recovery`], to take back what it had in hand).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Setup {
    /// Create the consumer group, or find it.
    Group,
    /// Take back this consumer's pending entries, before anything new.
    Recovery,
    Done,
}

/// Whether the last WAIT reached `redis.wait_replicas` replicas.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Replicas {
    Enough,
    Short,
}

pub(super) struct Session {
    /// The blocking XREADGROUP's own connection; `None` while a read is in flight.
    pub reader: Option<Reader>,
    /// Entries read by ID.
    pub fetcher: Reader,
    /// Everything else.
    pub writer: MultiplexedConnection,
    /// Servers counted, and SPUBLISH to other shards, over every node of a cluster; the writer
    /// otherwise.
    pub all_nodes: AllNodes,
    /// The `run_id` of the Redis process both reach: it changes when Redis restarts.
    pub run_id: String,
    pub flow: Flow,
    /// Published by the delivery scripts, until confirmed.
    pub confirming: Confirming,

    /// The next batch's read, already on its way.
    pub read: Option<ReadTask>,
    /// What is left to set up before new entries are read.
    pub setup: Setup,
    /// What the last WAIT found (a shortfall is said once).
    pub replicas: Replicas,
    /// The servers' answers to broadcasts with acknowledgements.
    pub listener: Listener,
    renewal: Option<JoinHandle<()>>,
}

impl Session {
    pub async fn new(conns: Connections, listener: Listener, confirming: Confirming) -> Session {
        let Connections {
            reader,
            fetcher,
            mut writer,
            all_nodes,
            run_id,
            ..
        } = conns;
        let flow = Flow::setup(&mut writer).await;
        Session {
            reader: Some(reader),
            fetcher,
            writer,
            all_nodes,
            run_id,
            flow,
            confirming,
            read: None,
            setup: Setup::Group,
            replicas: Replicas::Enough,
            listener,
            renewal: None,
        }
    }

    /// Keeps the consumer-name lease renewed on this session's connection.
    pub fn renew(&mut self, lease: &Lease, scripts: Arc<Scripts>) {
        self.renewal = Some(tokio::spawn(lease.renewal(scripts, self.writer.clone())));
    }

    /// Waits for the read in flight, if any, takes its connection back, and returns what it read.
    pub async fn finish_read(&mut self) -> Option<Result<Vec<Fetched>, Fault>> {
        let read = self.read.take()?;
        match read.await {
            Ok((reader, fetched)) => {
                self.reader = Some(reader);
                Some(fetched.map_err(Fault::from))
            }
            Err(e) => Some(Err(Fault::bug(format!("the read task failed: {e}")))),
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(read) = self.read.take() {
            read.abort();
        }
        if let Some(renewal) = self.renewal.take() {
            renewal.abort();
        }
    }
}
