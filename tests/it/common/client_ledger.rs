//! Per-entry, per-client ledgers of numbered entries, for the tests where "delivered" means a
//! client got it (delivered.rs, python_socketio.rs).

use std::collections::BTreeMap;
use std::time::Duration;

use super::*;

const SECOND: Duration = Duration::from_secs(1);

/// Entry `n` for `room`: event `n` with the arguments `n` and `"entry:<n>;"` (a tag the tests find
/// in whatever bytes the relay publishes), and `x-seq` `n` (kept in a dead letter).
pub fn entry(n: usize, room: &str) -> Vec<(&'static str, String)> {
    vec![
        ("event", "n".into()),
        ("room", room.into()),
        ("args", format!(r#"[{n},"{}"]"#, tag(n))),
        ("x-seq", n.to_string()),
    ]
}

pub fn tag(n: usize) -> String {
    format!("entry:{n};")
}

/// Who must get what: entry `n` goes to room `rooms[n]`, whose clients are `members[room]`.
pub struct Fanout {
    pub rooms: Vec<String>,
    pub members: BTreeMap<String, Vec<String>>,
}

impl Fanout {
    pub fn clients(&self) -> Vec<String> {
        self.members.values().flatten().cloned().collect()
    }
}

/// What each client received of the numbered entries, per entry; `lane(n)` names the sequence
/// entry `n` must arrive in order within (its room for one relay; its room and the relay that read
/// it for several, which docs/02-guarantees.md lets interleave).
pub struct ClientLedger {
    pub produced: usize,
    /// Per entry: times each member of its room got it (every member listed, 0 included).
    pub received: Vec<BTreeMap<String, u32>>,
    /// Per entry: times it reached a client that is not in its room.
    pub strays: Vec<u32>,
    pub dead: Vec<u32>,
    /// "client got n after m", for each entry a client got after a later one of the same lane.
    pub out_of_order: Vec<String>,
}

impl ClientLedger {
    pub fn count(
        clients: &Clients,
        fanout: &Fanout,
        lane: &dyn Fn(usize) -> String,
        con: &mut redis::Connection,
    ) -> ClientLedger {
        let produced = fanout.rooms.len();
        let mut ledger = ClientLedger {
            produced,
            received: fanout
                .rooms
                .iter()
                .map(|room| {
                    fanout.members[room]
                        .iter()
                        .map(|c| (c.clone(), 0))
                        .collect()
                })
                .collect(),
            strays: vec![0; produced],
            dead: vec![0; produced],
            out_of_order: Vec::new(),
        };
        for (client, events) in clients.received() {
            let mut last_of_lane: BTreeMap<String, usize> = BTreeMap::new();
            for (event, args) in events {
                if event != "n" {
                    continue;
                }
                let n = args[0].as_u64().expect("entry number") as usize;
                match ledger.received[n].get_mut(&client) {
                    Some(times) => *times += 1,
                    None => ledger.strays[n] += 1,
                }
                let previous = last_of_lane.insert(lane(n), n);
                if let Some(m) = previous.filter(|&m| m > n) {
                    ledger
                        .out_of_order
                        .push(format!("{client} got {n} after {m}"));
                }
            }
        }
        for (_, fields) in dead_letters(con) {
            if let Some(n) = field(&fields, "x-seq").and_then(|n| n.parse::<usize>().ok()) {
                ledger.dead[n] += 1;
            }
        }
        ledger
    }

    /// Entries some member of their room never got (and that were not dead-lettered).
    pub fn lost(&self) -> Vec<usize> {
        (0..self.produced)
            .filter(|&n| self.dead[n] == 0 && self.received[n].values().any(|&t| t == 0))
            .collect()
    }

    /// Entries some member got more than once.
    pub fn duplicated(&self) -> Vec<usize> {
        (0..self.produced)
            .filter(|&n| self.received[n].values().any(|&t| t > 1))
            .collect()
    }

    pub fn summary(&self, scenario: &str) -> String {
        let delivered = (0..self.produced)
            .filter(|&n| self.received[n].values().all(|&t| t > 0))
            .count();
        let dead = self.dead.iter().filter(|&&d| d > 0).count();
        let strays: u32 = self.strays.iter().sum();
        format!(
            "chaos {scenario}: produced {}, delivered {delivered}, dead-lettered {dead}, lost {}, duplicated {}, out of order {}, to clients outside the room {strays}",
            self.produced,
            self.lost().len(),
            self.duplicated().len(),
            self.out_of_order.len(),
        )
    }

    /// Every member of each entry's room got it exactly once, in order within its lane, and
    /// nobody else got it; nothing was dead-lettered.
    pub fn assert_each_member_once_in_order(&self) {
        let who = |n: usize| format!("{n}: {:?}", self.received[n]);
        let first =
            |entries: Vec<usize>| -> Vec<String> { entries.into_iter().take(8).map(who).collect() };
        assert!(
            self.lost().is_empty() && self.duplicated().is_empty(),
            "lost {} (first, times each member got them: {:?}), duplicated {} (first {:?})",
            self.lost().len(),
            first(self.lost()),
            self.duplicated().len(),
            first(self.duplicated()),
        );
        assert!(
            self.out_of_order.is_empty(),
            "out of order: {:?}",
            self.out_of_order
        );
        assert_eq!(self.strays.iter().sum::<u32>(), 0, "outside their rooms");
        assert_eq!(self.dead.iter().sum::<u32>(), 0, "dead-lettered");
    }
}

/// Waits until every client of `fanout` is connected again (joined its rooms `joins` times), the
/// relays have nothing pending nor held, and an `end` emit to everyone produced after that reached
/// every client: everything published before it has arrived too. Then counts.
pub fn settle(
    redis: &RedisServer,
    clients: &Clients,
    fanout: &Fanout,
    joins: usize,
    lane: &dyn Fn(usize) -> String,
) -> ClientLedger {
    let mut con = redis.connection();
    for client in fanout.clients() {
        wait_until(
            60 * SECOND,
            &format!("{client} is back in its rooms (socket.io-client reconnects by itself)"),
            || clients.joins(&client) >= joins,
        );
    }
    wait_until(60 * SECOND, "nothing is pending nor held", || {
        pending(&mut con).is_empty() && held_record(&mut con) == 0
    });
    let names = fanout.clients();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    end_marker(&mut con, STREAM, &[], clients, &names);
    ClientLedger::count(clients, fanout, lane, &mut con)
}
