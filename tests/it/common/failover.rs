//! The per-entry ledger of a failover: a producer that survives the primary's death the way a
//! careful user writes one, and the count, once everything settled, of what the client received
//! against what the new primary's stream holds.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{dead_letters_in, field, numbered, wait_until, Clients, Ledger, GROUP};

/// Entries `0..total`, numbered (`numbered`), XADDed through whatever `connect` returns: it
/// connects again after any error, gives each entry an explicit ID (so that a retried XADD whose
/// first attempt did land is refused instead of added twice) and WAITs for a replica, recording
/// whether the entry was known to be replicated when the producer moved on.
pub struct FailoverProducer {
    pub produced: Arc<AtomicUsize>,
    /// Entries whose WAIT reached no replica: the ones a failover may take away.
    pub unreplicated: Arc<Mutex<HashSet<usize>>>,
    pub done: Arc<AtomicBool>,
}

impl FailoverProducer {
    pub fn start(
        stream: &str,
        total: usize,
        connect: impl Fn() -> Option<redis::Connection> + Send + 'static,
    ) -> FailoverProducer {
        let produced = Arc::new(AtomicUsize::new(0));
        let unreplicated = Arc::new(Mutex::new(HashSet::new()));
        let done = Arc::new(AtomicBool::new(false));
        let base = sio_relay::connection::now_ms() as u64;
        let (p, u, d) = (produced.clone(), unreplicated.clone(), done.clone());
        let stream = stream.to_owned();
        std::thread::spawn(move || {
            let mut con = None;
            let mut replicated = false;
            let mut i = 0;
            while i < total {
                if con.is_none() {
                    con = connect();
                    let Some(c) = con.as_mut() else {
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    };
                    // A primary without a replica has nothing to wait for (and nothing a
                    // failover could promote).
                    let info: redis::RedisResult<redis::InfoDict> =
                        redis::cmd("INFO").arg("replication").query(c);
                    replicated = info.is_ok_and(|i| i.get::<u32>("connected_slaves") > Some(0));
                }
                let c = con.as_mut().unwrap();
                let added: redis::RedisResult<String> = redis::cmd("XADD")
                    .arg(&stream)
                    .arg(format!("{}-0", base + i as u64))
                    .arg(numbered(i))
                    .query(c);
                match added {
                    Ok(_) => {}
                    Err(e) if e.to_string().contains("equal or smaller") => {} // it did land
                    Err(_) => {
                        con = None;
                        continue;
                    }
                }
                if !replicated {
                    u.lock().unwrap().insert(i);
                } else {
                    match redis::cmd("WAIT").arg(1).arg(200).query::<u32>(c) {
                        Ok(reached) => {
                            if reached == 0 {
                                u.lock().unwrap().insert(i);
                            }
                        }
                        Err(_) => {
                            u.lock().unwrap().insert(i);
                            con = None;
                        }
                    }
                }
                i += 1;
                p.store(i, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(2));
            }
            d.store(true, Ordering::SeqCst);
        });
        FailoverProducer {
            produced,
            unreplicated,
            done,
        }
    }

    pub fn wait_produced(&self, n: usize, timeout: Duration) {
        wait_until(timeout, &format!("{n} entries are produced"), || {
            self.produced.load(Ordering::SeqCst) >= n
        });
    }

    pub fn wait_done(&self, timeout: Duration) {
        wait_until(timeout, "everything is produced", || {
            self.done.load(Ordering::SeqCst)
        });
    }

    /// Once every entry in `stream` (on the primary `con` reaches) was delivered to client `c` of
    /// `clients` or dead-lettered to `dead`, nothing is pending, and an end entry reached `c` after
    /// them: the ledger. Entries missing
    /// from the stream must be ones the producer never saw replicated (asynchronous replication
    /// lost them with the old primary, before anyone read them: not the relay's to lose); they are
    /// excused.
    pub fn settle(
        &self,
        clients: &Clients,
        con: &mut redis::Connection,
        stream: &str,
        dead: &str,
        total: usize,
    ) -> Ledger {
        let in_stream: HashSet<usize> = seqs(con, stream).into_iter().collect();
        let dead_seqs = |con: &mut redis::Connection| -> Vec<usize> {
            dead_letters_in(con, dead)
                .iter()
                .filter_map(|(_, fields)| field(fields, "x-seq")?.parse().ok())
                .collect()
        };
        wait_until(
            Duration::from_secs(60),
            "every entry of the stream is delivered",
            || {
                let got: HashSet<u64> = delivered(clients).into_iter().collect();
                let pending: (u64,) = redis::cmd("XPENDING")
                    .arg(stream)
                    .arg(GROUP)
                    .query::<(u64, redis::Value, redis::Value, redis::Value)>(con)
                    .map(|(n, ..)| (n,))
                    .unwrap_or((u64::MAX,));
                let dead = dead_seqs(con);
                pending.0 == 0
                    && in_stream
                        .iter()
                        .all(|&i| got.contains(&(i as u64)) || dead.contains(&i))
            },
        );
        // Nothing pending, so nothing is published again; and one last entry: once `c` has it, it
        // has whatever was published before it (a duplicate included).
        super::end_marker(con, stream, &[], clients, &["c"]);
        let mut ledger = Ledger {
            produced: total,
            delivered: vec![0; total],
            dead: vec![0; total],
            excused: vec![false; total],
        };
        for n in delivered(clients) {
            ledger.delivered[n as usize] += 1;
        }
        for i in dead_seqs(con) {
            ledger.dead[i] += 1;
        }
        let unreplicated = self.unreplicated.lock().unwrap().clone();
        for i in 0..total {
            if ledger.reached(i) == 0 && !in_stream.contains(&i) {
                assert!(
                    unreplicated.contains(&i),
                    "entry {i} vanished although WAIT saw it replicated"
                );
                ledger.excused[i] = true;
            }
        }
        ledger
    }
}

/// Each `n` client `c` received, in order.
pub fn delivered(clients: &Clients) -> Vec<u64> {
    clients
        .events_of("c")
        .iter()
        .filter(|(event, _)| event == "n")
        .map(|(_, args)| args[0].as_u64().unwrap())
        .collect()
}

/// The `x-seq` of every entry in `stream`.
fn seqs(con: &mut redis::Connection, stream: &str) -> Vec<usize> {
    let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query(con)
        .unwrap();
    entries
        .ids
        .iter()
        .filter_map(|e| e.get::<String>("x-seq")?.parse().ok())
        .collect()
}
