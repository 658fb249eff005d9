//! Reading stream entries with bounded memory, whatever producers put in them.
//!
//! A Redis client library reads a whole reply into memory before handing it over: one XREADGROUP of
//! 256 entries of 1 MB is 256 MB, one entry of 500 MB is 500 MB. So the relay reads entries on
//! connections of its own and parses each reply as it arrives: an entry is kept only while it fits
//! `limits.max_entry_bytes` and `limits.max_fields` (past them its bytes are read off the socket and
//! dropped, and only its ID, size and field count are kept, to dead-letter it inside Redis), and a
//! call keeps entries only while they fit its byte budget (past it the rest are *deferred*: known by
//! ID, to be read again later by ID, since they are pending for this consumer already). Nothing a
//! producer writes decides how much memory the relay uses.
//!
//! Only the commands that return entries go through here (XREADGROUP, XRANGE), in RESP2, on plain
//! TCP, TLS (the same CA and client certificate as the other connections) or a Unix socket.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use redis::ConnectionAddr;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::BufReader;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::config::Config;
use crate::fault::LinkError;

/// What a read gives: entries, or why the link failed (Redis's error replies included).
type Result<T> = std::result::Result<T, LinkError>;
use crate::entry::{EntryId, RawEntry};

/// What one entry of a reply turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub enum Fetched {
    /// Read whole.
    Entry(RawEntry),
    /// Over `limits.max_entry_bytes` or `limits.max_fields`: not kept.
    TooBig {
        id: EntryId,
        bytes: u64,
        fields: u64,
    },
    /// Within the limits, but past this call's budget: not kept, to be read again by ID.
    Deferred { id: EntryId, bytes: u64 },
    /// Pending, but deleted from the stream.
    Deleted(EntryId),
}

impl Fetched {
    /// The entry's size, whether kept or not.
    pub fn bytes(&self) -> u64 {
        match self {
            Fetched::Entry(raw) => raw.byte_len() as u64,
            Fetched::TooBig { bytes, .. } | Fetched::Deferred { bytes, .. } => *bytes,
            Fetched::Deleted(_) => 0,
        }
    }
}

/// The limits a call reads entries under.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_entry_bytes: u64,
    pub max_fields: u64,
    /// Bytes of entries one call keeps; the first entry may take up to `max_entry_bytes`.
    pub budget: u64,
}

impl Limits {
    pub fn of(cfg: &Config) -> Limits {
        Limits {
            max_entry_bytes: cfg.limits.max_entry_bytes as u64,
            max_fields: cfg.limits.max_fields as u64,
            budget: cfg.delivery.max_batch_bytes as u64,
        }
    }
}

/// The longest line (a length, an ID, an error) a reply may hold.
const MAX_LINE: usize = 4096;

/// Bytes read off the socket at a time.
const BUFFER: usize = 64 << 10;

trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// A connection that reads entries under [`Limits`].
pub struct Reader {
    io: BufReader<Box<dyn Stream>>,
    limits: Limits,
    response_timeout: Duration,
}

impl Reader {
    /// Connects to `node` (the address and credentials resolved for this session, with the TLS
    /// files of the configuration) and authenticates. Replies are waited for up to
    /// `response_timeout`.
    pub async fn connect(
        cfg: &Config,
        info: &redis::ConnectionInfo,
        response_timeout: Duration,
    ) -> Result<Reader> {
        let connect = async {
            let stream: Box<dyn Stream> = match info.addr() {
                ConnectionAddr::Tcp(host, port) => {
                    let tcp = tokio::net::TcpStream::connect((host.as_str(), *port)).await?;
                    tcp.set_nodelay(true)?;
                    Box::new(tcp)
                }
                ConnectionAddr::TcpTls { host, port, .. } => {
                    let tcp = tokio::net::TcpStream::connect((host.as_str(), *port)).await?;
                    tcp.set_nodelay(true)?;
                    let name = ServerName::try_from(host.clone())
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                    Box::new(tls_connector(cfg)?.connect(name, tcp).await?)
                }
                ConnectionAddr::Unix(path) => {
                    Box::new(tokio::net::UnixStream::connect(path).await?)
                }
                other => {
                    return Err(LinkError::Address {
                        why: "an address the relay cannot connect to",
                        address: format!("{other:?}"),
                    })
                }
            };
            Ok::<_, LinkError>(stream)
        };
        let stream = tokio::time::timeout(cfg.redis.connect_timeout, connect)
            .await
            .map_err(|_| timed_out("connecting"))??;
        let mut reader = Reader {
            io: BufReader::with_capacity(BUFFER, stream),
            limits: Limits::of(cfg),
            response_timeout,
        };
        let settings = info.redis_settings();
        if let Some(password) = settings.password() {
            let mut auth = vec!["AUTH".as_bytes()];
            if let Some(user) = settings.username() {
                auth.push(user.as_bytes());
            }
            auth.push(password.as_bytes());
            reader.simple(&auth).await?;
        }
        if settings.db() != 0 {
            reader
                .simple(&[b"SELECT", settings.db().to_string().as_bytes()])
                .await?;
        }
        Ok(reader)
    }

    /// XREADGROUP of new entries (`>`), blocking up to `block`.
    pub async fn read_group(
        &mut self,
        stream: &str,
        group: &str,
        consumer: &str,
        count: usize,
        block: Duration,
    ) -> Result<Vec<Fetched>> {
        let (count, block) = (count.to_string(), block.as_millis().to_string());
        let command: [&[u8]; 10] = [
            b"XREADGROUP",
            b"GROUP",
            group.as_bytes(),
            consumer.as_bytes(),
            b"COUNT",
            count.as_bytes(),
            b"BLOCK",
            block.as_bytes(),
            b"STREAMS",
            stream.as_bytes(),
        ];
        let mut command = command.to_vec();
        command.push(b">");
        let wait = self.response_timeout
            + block
                .parse::<u64>()
                .map_or(Duration::ZERO, Duration::from_millis);
        self.timed(wait, |r| async move {
            r.send(&[&command]).await?;
            let mut budget = Budget::new(r.limits);
            let mut out = Vec::new();
            let Some(streams) = r.array_header().await? else {
                return Ok(out); // BLOCK expired
            };
            for _ in 0..streams {
                r.expect_array(2).await?;
                r.small_bulk().await?;
                r.entry_list(&mut budget, &mut out).await?;
            }
            Ok(out)
        })
        .await
    }

    /// The entries with these IDs (one XRANGE each, pipelined), in the order given.
    pub async fn by_id(&mut self, stream: &str, ids: &[EntryId]) -> Result<Vec<Fetched>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = ids.iter().map(EntryId::to_string).collect();
        let timeout = self.response_timeout;
        self.timed(timeout, |r| async move {
            let commands: Vec<Vec<&[u8]>> = ids
                .iter()
                .map(|id| {
                    vec![
                        &b"XRANGE"[..],
                        stream.as_bytes(),
                        id.as_bytes(),
                        id.as_bytes(),
                    ]
                })
                .collect();
            let commands: Vec<&[&[u8]]> = commands.iter().map(Vec::as_slice).collect();
            r.send(&commands).await?;
            let mut budget = Budget::new(r.limits);
            let mut out = Vec::new();
            let mut first_error = None;
            for id in &ids {
                let before = out.len();
                match r.entry_list(&mut budget, &mut out).await {
                    Ok(()) => {}
                    Err(e) if is_server_error(&e) => {
                        first_error.get_or_insert(e);
                    }
                    Err(e) => return Err(e),
                }
                if out.len() == before {
                    out.push(Fetched::Deleted(id.parse().map_err(protocol)?));
                }
            }
            match first_error {
                Some(e) => Err(e),
                None => Ok(out),
            }
        })
        .await
    }

    /// A command whose reply is only checked for errors (AUTH, SELECT).
    async fn simple(&mut self, args: &[&[u8]]) -> Result<()> {
        let timeout = self.response_timeout;
        self.timed(timeout, |r| async move {
            r.send(&[args]).await?;
            let line = r.line().await?;
            match line.first() {
                Some(b'+') => Ok(()),
                _ => Err(protocol(format!(
                    "unexpected reply {:?}",
                    String::from_utf8_lossy(&line)
                ))),
            }
        })
        .await
    }

    async fn timed<'a, T, F>(
        &'a mut self,
        timeout: Duration,
        work: impl FnOnce(&'a mut Reader) -> F,
    ) -> Result<T>
    where
        F: std::future::Future<Output = Result<T>> + 'a,
    {
        tokio::time::timeout(timeout, work(self))
            .await
            .map_err(|_| timed_out("waiting for a reply"))?
    }

    /// Writes `commands` as RESP arrays of bulk strings, in one go.
    async fn send(&mut self, commands: &[&[&[u8]]]) -> Result<()> {
        let mut out = Vec::new();
        for args in commands {
            out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
            for arg in *args {
                out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
                out.extend_from_slice(arg);
                out.extend_from_slice(b"\r\n");
            }
        }
        let stream = self.io.get_mut();
        stream.write_all(&out).await?;
        stream.flush().await?;
        Ok(())
    }

    /// One reply line without its CRLF; an error reply becomes the error.
    async fn line(&mut self) -> Result<Vec<u8>> {
        let mut line = Vec::new();
        let read = (&mut self.io)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut line)
            .await?;
        if read == 0 {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
        }
        if !line.ends_with(b"\r\n") {
            return Err(protocol("a reply line too long or cut short"));
        }
        line.truncate(line.len() - 2);
        if line.first() == Some(&b'-') {
            let text = String::from_utf8_lossy(&line[1..]).into_owned();
            let (code, detail) = text.split_once(' ').unwrap_or((&text, ""));
            // Redis's own error reply, carried as redis-rs carries one, so that it is sorted the
            // same way (NOGROUP, BUSY, ...) whichever connection it came on.
            return Err(
                redis::make_extension_error(code.to_owned(), Some(detail.to_owned())).into(),
            );
        }
        Ok(line)
    }

    /// The length in a `<kind><n>` header line; `None` for a nil (`-1`).
    async fn header(&mut self, kind: u8) -> Result<Option<u64>> {
        let line = self.line().await?;
        if line.first() != Some(&kind) {
            return Err(protocol(format!(
                "expected `{}`, got {:?}",
                kind as char,
                String::from_utf8_lossy(&line)
            )));
        }
        let n = std::str::from_utf8(&line[1..])
            .ok()
            .and_then(|n| n.parse::<i64>().ok())
            .ok_or_else(|| protocol("a length that is not a number"))?;
        Ok(u64::try_from(n).ok())
    }

    async fn array_header(&mut self) -> Result<Option<u64>> {
        self.header(b'*').await
    }

    async fn expect_array(&mut self, n: u64) -> Result<()> {
        match self.array_header().await? {
            Some(m) if m == n => Ok(()),
            other => Err(protocol(format!("expected an array of {n}, got {other:?}"))),
        }
    }

    /// A short bulk string (a stream name, an ID): at most [`MAX_LINE`] bytes.
    async fn small_bulk(&mut self) -> Result<Vec<u8>> {
        let len = self
            .header(b'$')
            .await?
            .ok_or_else(|| protocol("a nil where a name was expected"))?;
        if len > MAX_LINE as u64 {
            return Err(protocol("a name or ID longer than 4096 bytes"));
        }
        self.bulk_body(len).await
    }

    async fn bulk_body(&mut self, len: u64) -> Result<Vec<u8>> {
        let mut body = vec![0; len as usize + 2];
        self.io.read_exact(&mut body).await?;
        if !body.ends_with(b"\r\n") {
            return Err(protocol("a bulk string not ended by CRLF"));
        }
        body.truncate(len as usize);
        Ok(body)
    }

    /// Reads and drops `len` bytes of a bulk string and its CRLF.
    async fn skip_body(&mut self, len: u64) -> Result<()> {
        let mut left = len + 2;
        while left > 0 {
            let available = self.io.fill_buf().await?;
            if available.is_empty() {
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
            }
            let n = available.len().min(left as usize);
            self.io.consume(n);
            left -= n as u64;
        }
        Ok(())
    }

    /// A list of entries, as XRANGE and XREADGROUP give them, into `out` under `budget`.
    async fn entry_list(&mut self, budget: &mut Budget, out: &mut Vec<Fetched>) -> Result<()> {
        let Some(entries) = self.array_header().await? else {
            return Ok(());
        };
        for _ in 0..entries {
            match self.array_header().await? {
                Some(2) => {}
                None => continue, // Redis 6: a deleted entry, without its ID
                Some(n) => return Err(protocol(format!("an entry of {n} parts"))),
            }
            let id = String::from_utf8(self.small_bulk().await?)
                .map_err(|_| protocol("an entry ID that is not text"))?
                .parse::<EntryId>()
                .map_err(protocol)?;
            let Some(items) = self.array_header().await? else {
                out.push(Fetched::Deleted(id));
                continue;
            };
            out.push(self.entry(id, items, budget).await?);
        }
        Ok(())
    }

    /// One entry's `items` field names and values: kept while it fits, else only measured.
    async fn entry(&mut self, id: EntryId, items: u64, budget: &mut Budget) -> Result<Fetched> {
        if !items.is_multiple_of(2) {
            return Err(protocol(format!(
                "entry {id} has an odd number of field items"
            )));
        }
        let fields = items / 2;
        let limits = budget.limits;
        // Kept until it turns out too big for the entry limit or for what is left of the budget.
        let mut kept: Option<Vec<Vec<u8>>> = (fields <= limits.max_fields && !budget.deferring)
            .then(|| Vec::with_capacity(items as usize));
        let mut bytes = 0u64;
        for _ in 0..items {
            let len = self
                .header(b'$')
                .await?
                .ok_or_else(|| protocol("a nil field"))?;
            bytes += len;
            if kept.is_some() && !budget.may_keep(bytes) {
                kept = None;
            }
            match kept.as_mut() {
                Some(parts) => parts.push(self.bulk_body(len).await?),
                None => self.skip_body(len).await?,
            }
        }
        if fields > limits.max_fields || bytes > limits.max_entry_bytes {
            return Ok(Fetched::TooBig { id, bytes, fields });
        }
        match kept {
            Some(parts) => {
                budget.take(bytes);
                let mut parts = parts.into_iter();
                let mut pairs = Vec::with_capacity(fields as usize);
                while let (Some(name), Some(value)) = (parts.next(), parts.next()) {
                    pairs.push((name, value));
                }
                Ok(Fetched::Entry(RawEntry { id, fields: pairs }))
            }
            None => {
                // Everything after a deferred entry is deferred too: entries stay in order.
                budget.deferring = true;
                Ok(Fetched::Deferred { id, bytes })
            }
        }
    }
}

/// What a call may still keep.
struct Budget {
    limits: Limits,
    kept: u64,
    any: bool,
    deferring: bool,
}

impl Budget {
    fn new(limits: Limits) -> Budget {
        Budget {
            limits,
            kept: 0,
            any: false,
            deferring: false,
        }
    }

    /// Whether an entry of `bytes` so far can still be kept.
    fn may_keep(&self, bytes: u64) -> bool {
        let room = if self.any {
            self.limits.budget.saturating_sub(self.kept)
        } else {
            self.limits.budget.max(self.limits.max_entry_bytes)
        };
        bytes <= self.limits.max_entry_bytes && bytes <= room
    }

    fn take(&mut self, bytes: u64) {
        self.kept += bytes;
        self.any = true;
    }
}

/// The TLS connector for `rediss://`: the CA file (or the system's roots) and the client
/// certificate, as for the other connections.
fn tls_connector(cfg: &Config) -> io::Result<tokio_rustls::TlsConnector> {
    let invalid = |what: &str, e: &dyn std::fmt::Display| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("{what}: {e}"))
    };
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    if cfg.redis.tls_ca_file.is_empty() {
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
    } else {
        for cert in CertificateDer::pem_file_iter(&cfg.redis.tls_ca_file)
            .map_err(|e| invalid("redis.tls_ca_file", &e))?
        {
            roots
                .add(cert.map_err(|e| invalid("redis.tls_ca_file", &e))?)
                .map_err(|e| invalid("redis.tls_ca_file", &e))?;
        }
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let builder = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid("TLS", &e))?
        .with_root_certificates(roots);
    let config = if cfg.redis.tls_cert_file.is_empty() {
        builder.with_no_client_auth()
    } else {
        let certs = CertificateDer::pem_file_iter(&cfg.redis.tls_cert_file)
            .map_err(|e| invalid("redis.tls_cert_file", &e))?
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| invalid("redis.tls_cert_file", &e))?;
        let key = PrivateKeyDer::from_pem_file(&cfg.redis.tls_key_file)
            .map_err(|e| invalid("redis.tls_key_file", &e))?;
        builder
            .with_client_auth_cert(certs, key)
            .map_err(|e| invalid("redis.tls_cert_file", &e))?
    };
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

fn protocol(problem: impl std::fmt::Display) -> LinkError {
    LinkError::Protocol(problem.to_string())
}

fn timed_out(doing: &'static str) -> LinkError {
    LinkError::TimedOut(doing)
}

fn is_server_error(e: &LinkError) -> bool {
    matches!(e, LinkError::Redis(e) if e.code().is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::Fault;

    /// A reader over canned reply bytes.
    fn reader(reply: &[u8], limits: Limits) -> Reader {
        let (mut server, client) = tokio::io::duplex(1 << 20);
        let reply = reply.to_vec();
        tokio::spawn(async move {
            server.write_all(&reply).await.unwrap();
            // Keep the other end open: the reader's requests go nowhere.
            let mut sink = Vec::new();
            let _ = server.read_to_end(&mut sink).await;
        });
        Reader {
            io: BufReader::with_capacity(16, Box::new(client)),
            limits,
            response_timeout: Duration::from_secs(5),
        }
    }

    fn limits(max_entry_bytes: u64, max_fields: u64, budget: u64) -> Limits {
        Limits {
            max_entry_bytes,
            max_fields,
            budget,
        }
    }

    fn entry(id: &str, fields: &[(&str, &str)]) -> String {
        let mut out = format!("*2\r\n${}\r\n{id}\r\n*{}\r\n", id.len(), fields.len() * 2);
        for (f, v) in fields {
            out.push_str(&format!("${}\r\n{f}\r\n${}\r\n{v}\r\n", f.len(), v.len()));
        }
        out
    }

    fn read_reply(entries: &[String]) -> Vec<u8> {
        format!(
            "*1\r\n*2\r\n$1\r\ns\r\n*{}\r\n{}",
            entries.len(),
            entries.concat()
        )
        .into_bytes()
    }

    fn id(s: &str) -> EntryId {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn entries_are_kept_measured_or_deferred() {
        let big = "x".repeat(100);
        let reply = read_reply(&[
            entry("1-0", &[("event", "a")]),
            entry("2-0", &[("event", "b"), ("data", &big)]),
            entry("3-0", &[("f1", "1"), ("f2", "2"), ("f3", "3")]),
            entry(
                "4-0",
                &[("event", "c"), ("data", "123456789012345678901234567890")],
            ),
            entry("5-0", &[("event", "d")]),
            entry("6-0", &[("event", "e")]),
        ]);
        let mut r = reader(&reply, limits(60, 2, 40));
        let got = r
            .read_group("s", "g", "c", 10, Duration::from_millis(1))
            .await
            .unwrap();
        assert_eq!(
            got,
            vec![
                Fetched::Entry(RawEntry {
                    id: id("1-0"),
                    fields: vec![(b"event".to_vec(), b"a".to_vec())]
                }),
                Fetched::TooBig {
                    id: id("2-0"),
                    bytes: 110,
                    fields: 2
                },
                Fetched::TooBig {
                    id: id("3-0"),
                    bytes: 9,
                    fields: 3
                },
                Fetched::Deferred {
                    id: id("4-0"),
                    bytes: 40
                },
                Fetched::Deferred {
                    id: id("5-0"),
                    bytes: 6
                },
                Fetched::Deferred {
                    id: id("6-0"),
                    bytes: 6
                },
            ],
            "1-0 fits; 2-0 passes the entry limit, 3-0 the field limit; 4-0 passes what is \
             left of the budget, and what follows waits behind it"
        );
    }

    #[tokio::test]
    async fn the_first_entry_may_take_up_to_the_entry_limit() {
        let reply = read_reply(&[entry("1-0", &[("event", &"y".repeat(50))])]);
        let mut r = reader(&reply, limits(100, 8, 10));
        let got = r
            .read_group("s", "g", "c", 10, Duration::from_millis(1))
            .await
            .unwrap();
        assert!(matches!(&got[..], [Fetched::Entry(_)]), "{got:?}");
    }

    #[tokio::test]
    async fn nil_errors_and_deleted_entries() {
        let mut r = reader(b"*-1\r\n", limits(100, 8, 100));
        assert!(r
            .read_group("s", "g", "c", 10, Duration::from_millis(1))
            .await
            .unwrap()
            .is_empty());
        let mut r = reader(b"-NOGROUP No such key\r\n", limits(100, 8, 100));
        let err = r
            .read_group("s", "g", "c", 10, Duration::from_millis(1))
            .await
            .unwrap_err();
        assert!(
            matches!(Fault::from(err), Fault::NoGroup),
            "an error reply is sorted as Redis's own"
        );
        // XRANGE of a deleted entry is an empty list.
        let reply = format!("*0\r\n*1\r\n{}", entry("2-0", &[("event", "a")]));
        let mut r = reader(reply.as_bytes(), limits(100, 8, 100));
        let got = r.by_id("s", &[id("1-0"), id("2-0")]).await.unwrap();
        assert!(
            matches!(&got[..], [Fetched::Deleted(_), Fetched::Entry(_)]),
            "{got:?}"
        );
    }
}
