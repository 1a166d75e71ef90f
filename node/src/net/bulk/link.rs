//! One bulk link after its handshake: the link key, frames (a sealed head, then a body as it
//! is) and a held shard's file sent straight from the page cache.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Instant;

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce, Tag};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::sendfile::sendfile;
use nix::sys::signal::{SigSet, Signal};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{invalid, MAX_HEAD, SEND_STALL, TAG_LEN};
use crate::net::held::HeldFile;
use crate::net::wire::{Request, Response, MAX_SHARD};
use crate::shard::ShardHeader;

/// What a frame's sealed head says.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Head<M> {
    pub(super) message: M,
    /// Length of the body that follows the head.
    pub(super) body: u32,
    /// The blake3 the body (a shard image) carries in its header.
    hash: Option<[u8; 32]>,
}

/// One end of a link, after the handshake.
pub(super) struct Link {
    stream: TcpStream,
    cipher: ChaCha20Poly1305,
    /// Direction byte of the frames this end sends.
    out: u8,
    sent: u64,
    received: u64,
    pub(super) last_used: Instant,
}

/// A body that is not what its authenticated head says: changed in flight, or sent wrong by
/// the peer; either way the link is dropped and the request asked again over libp2p, and
/// nobody is blamed ([`is_changed_in_flight`]).
pub(super) fn changed_in_flight() -> io::Error {
    io::Error::other(CHANGED_IN_FLIGHT)
}

const CHANGED_IN_FLIGHT: &str = "the body is not the shard its head names (changed in flight?)";

/// Whether `e` is [`changed_in_flight`].
pub(super) fn is_changed_in_flight(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Other && e.to_string() == CHANGED_IN_FLIGHT
}

fn nonce(direction: u8, counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[0] = direction;
    n[4..].copy_from_slice(&counter.to_le_bytes());
    Nonce::from(n)
}

pub(super) fn link_key(
    session: &[u8; 32],
    client: &[u8; 16],
    server: &[u8; 16],
) -> ChaCha20Poly1305 {
    let key = blake3::Hasher::new_keyed(session)
        .update(b"dfs bulk link key v1")
        .update(client)
        .update(server)
        .finalize();
    ChaCha20Poly1305::new(&Key::from(*key.as_bytes()))
}

/// While a body is read, the link's reader is woken only once this many of its bytes (or all
/// that are left) have arrived: a shard then takes a few reads rather than one per loopback
/// segment, each a wakeup of the reading thread.
const LOW_WATER: usize = 256 << 10;

/// Set the socket's receive low-water mark (`SO_RCVLOWAT`): readiness is reported once `bytes`
/// are queued, while a read still returns whatever has arrived. Only a hint: a failure is
/// ignored (the reader is then woken more often).
fn set_low_water(stream: &TcpStream, bytes: usize) {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: the descriptor is open for the duration of the call (borrowed from `stream`),
    // and the option's value is a c_int whose size is passed along.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        tracing::debug!(error = %io::Error::last_os_error(), "cannot set SO_RCVLOWAT");
    }
}

/// The length and sealed head of frame number `counter` from direction `out`.
fn seal<M: Serialize>(
    cipher: &ChaCha20Poly1305,
    out: u8,
    counter: u64,
    message: &M,
    body_len: u64,
    hash: Option<[u8; 32]>,
) -> io::Result<Vec<u8>> {
    let head = Head {
        message,
        body: u32::try_from(body_len).map_err(|_| invalid("body too large"))?,
        hash,
    };
    let mut frame = postcard::to_extend(&head, vec![0u8; 4]).map_err(|e| invalid(e.to_string()))?;
    let sealed_len = frame.len() - 4 + TAG_LEN;
    if sealed_len > MAX_HEAD {
        return Err(invalid("frame head too large"));
    }
    frame[..4].copy_from_slice(&(sealed_len as u32).to_be_bytes());
    let tag = cipher
        .encrypt_inout_detached(&nonce(out, counter), &[], frame[4..].as_mut().into())
        .map_err(|_| invalid("cannot seal the frame head"))?;
    frame.extend_from_slice(&tag);
    Ok(frame)
}

/// Open the sealed head of frame number `counter` from direction `from` (its bytes after the
/// length) in place; the plaintext, or `InvalidData` when it does not authenticate.
fn open_head<'a>(
    cipher: &ChaCha20Poly1305,
    from: u8,
    counter: u64,
    sealed: &'a mut [u8],
) -> io::Result<&'a [u8]> {
    let Some(split) = sealed.len().checked_sub(TAG_LEN) else {
        return Err(invalid(format!("frame head of {} bytes", sealed.len())));
    };
    let (plain, tag) = sealed.split_at_mut(split);
    let tag = Tag::try_from(&*tag).map_err(|_| invalid("bad tag"))?;
    cipher
        .decrypt_inout_detached(&nonce(from, counter), &[], plain.into(), &tag)
        .map_err(|_| invalid("frame head does not authenticate"))?;
    Ok(plain)
}

/// Decode an opened frame head. Its sender holds the link key, so it may say anything: what
/// does not decode, has trailing bytes or announces a body larger than a shard is `InvalidData`.
fn decode_head<M: DeserializeOwned>(plain: &[u8]) -> io::Result<Head<M>> {
    let (head, rest): (Head<M>, _) =
        postcard::take_from_bytes(plain).map_err(|e| invalid(e.to_string()))?;
    if !rest.is_empty() {
        return Err(invalid("trailing bytes in the frame head"));
    }
    if head.body as usize > MAX_SHARD {
        return Err(invalid(format!("body of {} bytes", head.body)));
    }
    Ok(head)
}

/// The frame head codec, for the fuzz targets in `fuzz/` (not an API).
pub mod fuzzing {
    use super::*;

    /// What a frame head says: the message, the length of the body after it, and the hash
    /// the body (a shard image) carries.
    #[derive(Debug, PartialEq, Eq)]
    pub struct HeadFields<M> {
        pub message: M,
        pub body: u32,
        pub hash: Option<[u8; 32]>,
    }

    /// Decode an opened head as a link does.
    pub fn decode_head<M: DeserializeOwned>(plain: &[u8]) -> io::Result<HeadFields<M>> {
        let head = super::decode_head::<M>(plain)?;
        Ok(HeadFields {
            message: head.message,
            body: head.body,
            hash: head.hash,
        })
    }

    /// Encode a head before it is sealed (the inverse of [`decode_head`]).
    pub fn encode_head<M: Serialize>(head: &HeadFields<M>) -> io::Result<Vec<u8>> {
        let head = Head {
            message: &head.message,
            body: head.body,
            hash: head.hash,
        };
        postcard::to_allocvec(&head).map_err(|e| invalid(e.to_string()))
    }

    /// Seal `plain` as frame `counter` from direction `from` under the link key of `session`
    /// (the sealed bytes after the length, as [`open_head`] takes them).
    pub fn seal_head(
        session: &[u8; 32],
        from: u8,
        counter: u64,
        plain: &[u8],
    ) -> io::Result<Vec<u8>> {
        let cipher = link_key(session, &[1; 16], &[2; 16]);
        let mut sealed = plain.to_vec();
        let tag = cipher
            .encrypt_inout_detached(&nonce(from, counter), &[], sealed.as_mut_slice().into())
            .map_err(|_| invalid("cannot seal the frame head"))?;
        sealed.extend_from_slice(&tag);
        Ok(sealed)
    }

    /// Open sealed head bytes as a link keyed like [`seal_head`] does.
    pub fn open_head(
        session: &[u8; 32],
        from: u8,
        counter: u64,
        sealed: &mut [u8],
    ) -> io::Result<Vec<u8>> {
        let cipher = link_key(session, &[1; 16], &[2; 16]);
        super::open_head(&cipher, from, counter, sealed).map(<[u8]>::to_vec)
    }
}

/// Write `head`, then the first `len` bytes of `file` with `sendfile`, to a non-blocking
/// socket from a blocking thread: waits for room (at most [`SEND_STALL`] at a time).
fn send_head_and_file(
    socket: &OwnedFd,
    head: &[u8],
    file: &std::fs::File,
    len: u64,
) -> io::Result<()> {
    // sendfile has no MSG_NOSIGNAL: a peer that hung up raises SIGPIPE on this thread, and the
    // dfs binary restores SIGPIPE's default action (die) for `dfs ... | head`. Blocked on this
    // thread it stays pending and harmless, and the call fails with EPIPE like any send.
    let mut pipe = SigSet::empty();
    pipe.add(Signal::SIGPIPE);
    pipe.thread_block()?;
    let mut written = 0;
    while written < head.len() {
        match nix::unistd::write(socket, &head[written..]) {
            Ok(n) => written += n,
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => wait_for_room(socket)?,
            Err(e) => return Err(e.into()),
        }
    }
    let mut offset: libc::off_t = 0;
    while (offset as u64) < len {
        let want = usize::try_from(len - offset as u64).unwrap_or(usize::MAX);
        match sendfile(socket, file, Some(&mut offset), want) {
            Ok(0) => return Err(invalid("the shard file is shorter than it was")),
            Ok(_) | Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => wait_for_room(socket)?,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Wait until `socket` can take more bytes; a peer that takes none for [`SEND_STALL`] is
/// `TimedOut`.
fn wait_for_room(socket: &OwnedFd) -> io::Result<()> {
    let mut fds = [PollFd::new(socket.as_fd(), PollFlags::POLLOUT)];
    let timeout = PollTimeout::try_from(SEND_STALL).unwrap_or(PollTimeout::MAX);
    if poll(&mut fds, timeout)? == 0 {
        return Err(io::ErrorKind::TimedOut.into());
    }
    Ok(())
}

impl Link {
    pub(super) fn new(stream: TcpStream, cipher: ChaCha20Poly1305, out: u8) -> Self {
        Link {
            stream,
            cipher,
            out,
            sent: 0,
            received: 0,
            last_used: Instant::now(),
        }
    }

    /// The connection itself (`open_stalled_store`, for the hostile-peer tests).
    pub(super) fn into_stream(self) -> TcpStream {
        self.stream
    }

    /// Send `message` with `body`: a shard image, in parts that follow each other on the wire
    /// (usually its header, then its body, sent from where they lie), or nothing.
    pub(super) async fn send<M: Serialize>(
        &mut self,
        message: &M,
        body: &[&[u8]],
    ) -> io::Result<()> {
        let len: usize = body.iter().map(|part| part.len()).sum();
        let hash = ShardHeader::carried_hash_of_parts(body);
        let frame = self.seal(message, len as u64, hash)?;
        self.stream.write_all(&frame).await?;
        for part in body {
            self.stream.write_all(part).await?;
        }
        Ok(())
    }

    /// Answer with a held shard's file as the body of `message`, straight from the page cache
    /// to the socket (`sendfile`): the holder never copies the image into memory. One task on
    /// the blocking pool opens the file with `open` (a cold one is read from the disk), sends
    /// the frame's head and then the file, so a fetch costs one hand-over between threads
    /// rather than one per step. `Ok(Err(answer))`: `open` refused, nothing was sent, and the
    /// caller sends `answer` instead. `Ok(Ok(len))`: the image's length, sent.
    pub(super) async fn send_held<F>(
        &mut self,
        message: Response,
        open: F,
    ) -> io::Result<Result<u64, Response>>
    where
        F: FnOnce() -> Result<HeldFile, Response> + Send + 'static,
    {
        // The blocking thread owns a duplicate of the socket, so it stays valid even if this
        // task is dropped meanwhile; the link is then dropped too, so a frame it half sent is
        // never followed by another.
        let socket = self.stream.as_fd().try_clone_to_owned()?;
        let (cipher, out, counter) = (self.cipher.clone(), self.out, self.sent);
        let sent = tokio::task::spawn_blocking(move || -> io::Result<Result<u64, Response>> {
            let shard = match open() {
                Ok(shard) => shard,
                Err(answer) => return Ok(Err(answer)),
            };
            let head = seal(&cipher, out, counter, &message, shard.len, Some(shard.hash))?;
            send_head_and_file(&socket, &head, &shard.file, shard.len)?;
            Ok(Ok(shard.len))
        })
        .await
        .map_err(io::Error::other)??;
        if sent.is_ok() {
            self.sent += 1;
        }
        Ok(sent)
    }

    /// The length and sealed head of the next frame this end sends.
    pub(super) fn seal<M: Serialize>(
        &mut self,
        message: &M,
        body_len: u64,
        hash: Option<[u8; 32]>,
    ) -> io::Result<Vec<u8>> {
        let frame = seal(&self.cipher, self.out, self.sent, message, body_len, hash)?;
        self.sent += 1;
        Ok(frame)
    }

    /// Receive one message and its body; anything that does not open, decode or match its
    /// head is `InvalidData`.
    pub(super) async fn receive<M: DeserializeOwned>(&mut self) -> io::Result<(M, Vec<u8>)> {
        let head = self.receive_head::<M>().await?;
        let body = self.receive_body(&head).await?;
        Ok((head.message, body))
    }

    /// The next frame's head (its body is still to be read, or skipped).
    pub(super) async fn receive_head<M: DeserializeOwned>(&mut self) -> io::Result<Head<M>> {
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len).await?;
        let len = u32::from_be_bytes(len) as usize;
        if !(TAG_LEN..=MAX_HEAD).contains(&len) {
            return Err(invalid(format!("frame head of {len} bytes")));
        }
        let mut sealed = vec![0u8; len];
        self.stream.read_exact(&mut sealed).await?;
        let plain = open_head(&self.cipher, self.out ^ 1, self.received, &mut sealed)?;
        self.received += 1;
        decode_head(plain)
    }

    /// The body that follows `head`.
    pub(super) async fn receive_body<M>(&mut self, head: &Head<M>) -> io::Result<Vec<u8>> {
        let body_len = head.body as usize;
        // Read into spare capacity: no zero-fill of a buffer about to be overwritten.
        let mut body = Vec::with_capacity(body_len);
        let mut water = 1;
        let read = async {
            while body.len() < body_len {
                let left = body_len - body.len();
                // Wake for a large piece of a large body at a time, never for more than is
                // left (a small body is read as it comes, without the two extra calls).
                let want = if body_len > LOW_WATER {
                    left.min(LOW_WATER)
                } else {
                    1
                };
                if want != water {
                    water = want;
                    set_low_water(&self.stream, water);
                }
                let left = left as u64;
                if (&mut self.stream).take(left).read_buf(&mut body).await? == 0 {
                    return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
                }
            }
            Ok(())
        };
        let read = read.await;
        if water != 1 {
            set_low_water(&self.stream, 1);
        }
        read?;
        if ShardHeader::carried_hash(&body) != head.hash {
            // The head is authenticated, the body is not: bytes changed in flight, which is
            // no proof against the sender. The link is dropped; the request goes again over
            // libp2p, whose every byte Noise authenticates.
            return Err(changed_in_flight());
        }
        self.last_used = Instant::now();
        Ok(body)
    }

    /// Read past the body that follows `head` without keeping it.
    pub(super) async fn skip_body<M>(&mut self, head: &Head<M>) -> io::Result<()> {
        let want = u64::from(head.body);
        let skipped =
            tokio::io::copy(&mut (&mut self.stream).take(want), &mut tokio::io::sink()).await?;
        if skipped != want {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }

    /// Client side: one request and its answer. A store's image is `body` when the request's
    /// own is empty (see [`Bulk::request`]).
    pub(super) async fn exchange(
        &mut self,
        request: &Request,
        body: &[&[u8]],
    ) -> io::Result<Response> {
        let sent = match request {
            Request::Store {
                chunk,
                index,
                image,
            } => {
                let head = Request::Store {
                    chunk: *chunk,
                    index: *index,
                    image: Vec::new(),
                };
                if image.is_empty() {
                    self.send(&head, body).await
                } else {
                    self.send(&head, &[image]).await
                }
            }
            other => self.send(other, &[]).await,
        };
        // InvalidData means the peer sent bad bytes (it is scored for it); a request this end
        // cannot frame is its own fault.
        sent.map_err(|e| match e.kind() {
            io::ErrorKind::InvalidData => io::Error::new(io::ErrorKind::InvalidInput, e),
            _ => e,
        })?;
        let (response, body) = self.receive::<Response>().await?;
        match response {
            Response::Shard { image } if image.is_empty() => Ok(Response::Shard { image: body }),
            other if body.is_empty() => Ok(other),
            _ => Err(invalid("a body came with an answer that has none")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{FROM_CLIENT, FROM_SERVER};
    use super::*;
    use dfs_placement::{ChunkId, Layout};
    use tokio::net::TcpListener;

    /// Both ends of a link on 127.0.0.1, keyed alike.
    async fn link_pair() -> (Link, Link) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let key = |_| link_key(&[7; 32], &[1; 16], &[2; 16]);
        (
            Link::new(client.unwrap(), key(()), FROM_CLIENT),
            Link::new(server.unwrap().0, key(()), FROM_SERVER),
        )
    }

    fn image(fill: u8) -> (ChunkId, Vec<u8>) {
        let layout = Layout::Erasure { data: 4, parity: 2 };
        let header = ShardHeader {
            chunk: ChunkId([fill; 32]),
            layout,
            index: 1,
            chunk_len: 4000,
        };
        let body = vec![fill; layout.shard_len(4000)];
        (header.chunk, header.encode(&body))
    }

    fn store_head(chunk: ChunkId) -> Request {
        Request::Store {
            chunk,
            index: 1,
            image: Vec::new(),
        }
    }

    /// The sealed head of a store of `image` (its body still to be written).
    fn store_frame(link: &mut Link, chunk: ChunkId, image: &[u8]) -> Vec<u8> {
        let hash = ShardHeader::carried_hash(image);
        link.seal(&store_head(chunk), image.len() as u64, hash)
            .unwrap()
    }

    async fn write_raw(link: &mut Link, bytes: &[u8]) {
        link.stream.write_all(bytes).await.unwrap();
    }

    fn is_invalid<T>(r: io::Result<T>) -> bool {
        matches!(r, Err(e) if e.kind() == io::ErrorKind::InvalidData)
    }

    #[tokio::test]
    async fn frames_round_trip_with_and_without_a_body() {
        let (mut client, mut server) = link_pair().await;
        let (chunk, image) = image(3);
        client.send(&store_head(chunk), &[&image]).await.unwrap();
        let (request, body) = server.receive::<Request>().await.unwrap();
        assert_eq!(request, store_head(chunk));
        assert_eq!(body, image);
        server.send(&Response::Stored, &[]).await.unwrap();
        let (response, body) = client.receive::<Response>().await.unwrap();
        assert_eq!((response, body.len()), (Response::Stored, 0));
        // And again: the counters move on together.
        client
            .send(&Request::Fetch { chunk, index: 1 }, &[])
            .await
            .unwrap();
        assert_eq!(
            server.receive::<Request>().await.unwrap().0,
            Request::Fetch { chunk, index: 1 }
        );
    }

    /// A held shard sent from its file: larger than the socket buffers, so the sender must
    /// wait for room between calls, and a file cut short on the way fails the send.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_shard_file_is_sent_as_it_lies() {
        let (mut client, mut server) = link_pair().await;
        let layout = Layout::Erasure { data: 4, parity: 2 };
        let len = 16 << 20;
        let header = ShardHeader {
            chunk: ChunkId([7; 32]),
            layout,
            index: 2,
            chunk_len: len,
        };
        let body: Vec<u8> = (0..layout.shard_len(len as usize))
            .map(|i| i as u8)
            .collect();
        let image = header.encode(&body);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shard");
        std::fs::write(&path, &image).unwrap();
        let open = || HeldFile {
            file: std::fs::File::open(&path).unwrap(),
            len: image.len() as u64,
            hash: ShardHeader::carried_hash(&image).unwrap(),
        };
        let shard = open();
        let sender = tokio::spawn(async move {
            let sent = server
                .send_held(Response::Shard { image: Vec::new() }, move || Ok(shard))
                .await
                .unwrap();
            (server, sent)
        });
        let (response, received) = client.receive::<Response>().await.unwrap();
        assert_eq!(response, Response::Shard { image: Vec::new() });
        assert!(received == image, "the body is the file's bytes");
        let (mut server, sent) = sender.await.unwrap();
        assert_eq!(sent, Ok(image.len() as u64));
        // A file that cannot be opened sends nothing: the answer goes out instead, and the
        // link stays in step.
        let refused = Response::Refused(crate::net::wire::Refusal::NotFound);
        let answer = refused.clone();
        let sent = server
            .send_held(Response::Shard { image: Vec::new() }, move || Err(answer))
            .await
            .unwrap();
        assert_eq!(sent, Err(refused.clone()));
        server.send(&refused, &[]).await.unwrap();
        let (response, body) = client.receive::<Response>().await.unwrap();
        assert_eq!((response, body.len()), (refused, 0));
        // The file shrank after it was opened (the frame promised more): the send fails.
        let shard = open();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(1000)
            .unwrap();
        let failed = server
            .send_held(Response::Shard { image: Vec::new() }, move || Ok(shard))
            .await;
        assert!(
            matches!(&failed, Err(e) if e.kind() == io::ErrorKind::InvalidData),
            "{failed:?}"
        );
    }

    /// A reader that hung up makes the send fail, and does not kill the process: sendfile
    /// raises SIGPIPE, whose default action the dfs binary restores (here too, for the test).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reader_that_hung_up_fails_the_send_and_kills_nothing() {
        use nix::sys::signal::{signal, SigHandler};
        // SAFETY: SIG_DFL installs no handler code; the Rust default (ignore) is put back.
        unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) }.unwrap();
        let (client, mut server) = link_pair().await;
        drop(client);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shard");
        let (_, image) = image(9);
        let image = image.repeat(1024);
        std::fs::write(&path, &image).unwrap();
        let mut failed = None;
        // The first sends may still land in the socket buffer before the reset arrives.
        for _ in 0..20 {
            let shard = HeldFile {
                file: std::fs::File::open(&path).unwrap(),
                len: image.len() as u64,
                hash: [0; 32],
            };
            if let Err(e) = server.send_held(Response::Stored, move || Ok(shard)).await {
                failed = Some(e);
                break;
            }
        }
        // SAFETY: as above.
        unsafe { signal(Signal::SIGPIPE, SigHandler::SigIgn) }.unwrap();
        assert!(failed.is_some(), "sending to a closed link never failed");
    }

    #[tokio::test]
    async fn a_skipped_body_leaves_the_link_in_step() {
        let (mut client, mut server) = link_pair().await;
        let (chunk, image) = image(5);
        client.send(&store_head(chunk), &[&image]).await.unwrap();
        client
            .send(&Request::Check { chunk, index: 1 }, &[])
            .await
            .unwrap();
        let head = server.receive_head::<Request>().await.unwrap();
        assert_eq!(head.body as usize, image.len());
        server.skip_body(&head).await.unwrap();
        assert_eq!(
            server.receive::<Request>().await.unwrap(),
            (Request::Check { chunk, index: 1 }, Vec::new())
        );
    }

    /// An answer with a body where none belongs is the peer's bad data (InvalidData, which the
    /// client scores), and the answer the client asked for is not taken from it.
    #[tokio::test]
    async fn a_body_with_an_answer_that_has_none_is_bad_data() {
        let (mut client, mut server) = link_pair().await;
        let (chunk, image) = image(6);
        let check = Request::Check { chunk, index: 1 };
        let ask = client.exchange(&check, &[]);
        let answer = async {
            let (request, body) = server.receive::<Request>().await.unwrap();
            assert_eq!(
                (request, body),
                (Request::Check { chunk, index: 1 }, Vec::new())
            );
            server.send(&Response::Stored, &[&image]).await.unwrap();
        };
        let (asked, ()) = tokio::join!(ask, answer);
        let err = asked.expect_err("a body with Stored");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    }

    #[tokio::test]
    async fn a_tampered_head_is_refused() {
        let (mut client, mut server) = link_pair().await;
        let mut frame = client
            .seal(
                &Request::Check {
                    chunk: ChunkId([1; 32]),
                    index: 0,
                },
                0,
                None,
            )
            .unwrap();
        let last = frame.len() - 1;
        frame[last - 20] ^= 1;
        write_raw(&mut client, &frame).await;
        assert!(is_invalid(server.receive::<Request>().await));
    }

    #[tokio::test]
    async fn a_body_swapped_in_flight_is_refused() {
        let (mut client, mut server) = link_pair().await;
        let (chunk, image_a) = image(3);
        let (_, image_b) = image(4);
        assert_eq!(image_a.len(), image_b.len());
        // Another shard's bytes behind the head: its carried hash differs.
        let frame = store_frame(&mut client, chunk, &image_a);
        write_raw(&mut client, &frame).await;
        write_raw(&mut client, &image_b).await;
        let err = server
            .receive::<Request>()
            .await
            .expect_err("a swapped body");
        assert!(is_changed_in_flight(&err), "{err}");

        // The right header with a changed byte in the body passes the link, and the shard
        // check (which the holder makes before storing) refuses it.
        let (mut client, mut server) = link_pair().await;
        let mut changed = image_a.clone();
        let last = changed.len() - 1;
        changed[last] ^= 1;
        let frame = store_frame(&mut client, chunk, &image_a);
        write_raw(&mut client, &frame).await;
        write_raw(&mut client, &changed).await;
        let (_, body) = server.receive::<Request>().await.unwrap();
        assert!(ShardHeader::decode_expected(&body, chunk, 1).is_err());
    }

    #[tokio::test]
    async fn replayed_and_reflected_frames_are_refused() {
        let (mut client, mut server) = link_pair().await;
        let request = Request::Delete {
            chunk: ChunkId([2; 32]),
            index: 0,
        };
        let frame = client.seal(&request, 0, None).unwrap();
        write_raw(&mut client, &frame).await;
        assert_eq!(server.receive::<Request>().await.unwrap().0, request);
        write_raw(&mut client, &frame).await;
        assert!(is_invalid(server.receive::<Request>().await));

        // A frame the server sealed, sent back to it: wrong direction.
        let (mut client, mut server) = link_pair().await;
        let frame = server.seal(&request, 0, None).unwrap();
        write_raw(&mut client, &frame).await;
        assert!(is_invalid(server.receive::<Request>().await));
    }

    #[tokio::test]
    async fn oversized_heads_and_bodies_are_refused_before_buffering() {
        let (mut client, mut server) = link_pair().await;
        write_raw(&mut client, &((MAX_HEAD + 1) as u32).to_be_bytes()).await;
        assert!(is_invalid(server.receive::<Request>().await));

        let (mut client, mut server) = link_pair().await;
        let head = Head {
            message: Request::Check {
                chunk: ChunkId([1; 32]),
                index: 0,
            },
            body: (MAX_SHARD + 1) as u32,
            hash: None,
        };
        let mut plain = postcard::to_allocvec(&head).unwrap();
        let tag = client
            .cipher
            .encrypt_inout_detached(&nonce(FROM_CLIENT, 0), &[], plain.as_mut_slice().into())
            .unwrap();
        plain.extend_from_slice(&tag);
        let mut frame = ((plain.len()) as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&plain);
        write_raw(&mut client, &frame).await;
        assert!(is_invalid(server.receive::<Request>().await));
    }

    #[tokio::test]
    async fn links_keyed_differently_do_not_talk() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let mut client = Link::new(
            client.unwrap(),
            link_key(&[7; 32], &[1; 16], &[2; 16]),
            FROM_CLIENT,
        );
        let mut server = Link::new(
            server.unwrap().0,
            link_key(&[7; 32], &[1; 16], &[3; 16]),
            FROM_SERVER,
        );
        client.send(&Response::Stored, &[]).await.unwrap();
        assert!(is_invalid(server.receive::<Response>().await));
    }
}
