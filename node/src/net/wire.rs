//! The shard protocol (`/dfs/shard/1`): what peers say to store, fetch, check and delete shards,
//! and how it is framed on a stream.
//!
//! A frame is a 4-byte big-endian length, then that many bytes: one version byte
//! ([`WIRE_VERSION`]) and a postcard-encoded [`Request`] or [`Response`]. A frame longer than
//! [`MAX_FRAME`] is refused before any of it is buffered; an unknown version, trailing bytes or
//! a body that does not decode is an error. Nothing here panics on bad input: every decoder is
//! property-tested with arbitrary bytes.

use std::io;
use std::time::Duration;

use dfs_placement::ChunkId;
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use serde::{Deserialize, Serialize};

use crate::config::MAX_CHUNK_SIZE;
use crate::shard::HEADER_LEN;

/// The protocol name negotiated on the stream.
pub const PROTOCOL: &str = "/dfs/shard/1";
/// The first byte of every frame's body.
pub const WIRE_VERSION: u8 = 1;
/// The largest shard image: a whole chunk replicated (plus its AEAD tag) and the shard header.
pub const MAX_SHARD: usize = MAX_CHUNK_SIZE as usize + 16 + HEADER_LEN;
/// The largest frame: one shard plus room for the message around it.
pub const MAX_FRAME: usize = MAX_SHARD + 1024;

/// What one peer asks of another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Keep this shard image (header + ciphertext body). The receiver verifies it first.
    Store {
        chunk: ChunkId,
        index: u8,
        // As bytes, not a sequence of u8 (same postcard encoding, one copy instead of a
        // per-byte loop).
        #[serde(with = "serde_bytes")]
        image: Vec<u8>,
    },
    /// Send back the shard image.
    Fetch { chunk: ChunkId, index: u8 },
    /// Re-verify the shard in place and say whether it is there and intact.
    Check { chunk: ChunkId, index: u8 },
    /// Forget the shard (only the peer that stored it may).
    Delete { chunk: ChunkId, index: u8 },
    /// Send back the shard image with only its header checked, not its checksum: for a
    /// requester that authenticates the bytes itself (a reader whose AEAD tag covers the
    /// chunk, and who asks again with [`Request::Fetch`] when the tag does not verify).
    FetchTrusting { chunk: ChunkId, index: u8 },
    /// Which shards of this chunk are held here (answered [`Response::Holds`]): how a reader
    /// that has only a link, or a holder checking a chunk's health, finds where the shards are
    /// without fetching any. `index` is ignored.
    Holding { chunk: ChunkId },
}

impl Request {
    /// The shard the request is about.
    pub fn shard(&self) -> (ChunkId, u8) {
        match self {
            Request::Store { chunk, index, .. }
            | Request::Fetch { chunk, index }
            | Request::Check { chunk, index }
            | Request::Delete { chunk, index }
            | Request::FetchTrusting { chunk, index } => (*chunk, *index),
            Request::Holding { chunk } => (*chunk, 0),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Request::Store { .. } => "store",
            Request::Fetch { .. } | Request::FetchTrusting { .. } => "fetch",
            Request::Check { .. } => "check",
            Request::Delete { .. } => "delete",
            Request::Holding { .. } => "holding",
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// The shard is not held here.
    NotFound,
    /// The image did not verify (checksum, header, or it is not for the named shard).
    Invalid,
    /// Not enough free space under this peer's capacity.
    Full,
    /// Only the peer that stored a shard may delete it.
    NotOwner,
    /// Too many requests in flight here; try another peer or later.
    Busy,
    /// The peer failed to read or write its disk.
    Internal,
    /// The peer holds no shards for others (a client: a peer run for one command, or a
    /// `--no-store` mount).
    NoStorage,
    /// A different image of this shard is held here already: a shard is taken once, and
    /// never replaced (only its storer may delete it).
    Conflict,
    /// The peer keeps no more for the asker: it reached its quota of what this peer stores
    /// for any one other peer.
    Quota,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refusal::NotFound => "shard not found",
            Refusal::Invalid => "shard did not verify",
            Refusal::Full => "peer is full",
            Refusal::NotOwner => "only a peer that stored a shard may delete it",
            Refusal::Busy => "peer is busy",
            Refusal::Internal => "peer failed to access its store",
            Refusal::NoStorage => "peer holds no shards for others (it is a client)",
            Refusal::Conflict => {
                "peer holds a different image of this shard, which it never replaces"
            }
            Refusal::Quota => "peer keeps no more for this peer (its per-peer quota is reached)",
        })
    }
}

/// The answer to a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Stored,
    Shard {
        #[serde(with = "serde_bytes")]
        image: Vec<u8>,
    },
    Checked {
        intact: bool,
        len: u64,
    },
    Deleted {
        freed: u64,
    },
    /// The indices of the shards of a chunk held here (ascending, each once, at most 255),
    /// and the header of the first of them (empty when none is held or it cannot be read),
    /// which tells the asker the chunk's layout and length without fetching a shard.
    Holds {
        #[serde(with = "serde_bytes")]
        indices: Vec<u8>,
        #[serde(with = "serde_bytes")]
        head: Vec<u8>,
    },
    Refused(Refusal),
}

impl Response {
    /// Whether this answer means the asker sent bad data: a shard that does not verify, or
    /// one that would replace another image of the same shard.
    pub fn blames_asker(&self) -> bool {
        matches!(
            self,
            Response::Refused(Refusal::Invalid | Refusal::Conflict)
        )
    }
}

/// Why bytes on the wire are not a valid frame.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("empty frame")]
    Empty,
    #[error("unknown wire version {0} (this peer speaks {WIRE_VERSION})")]
    Version(u8),
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("{0} trailing bytes after the message")]
    Trailing(usize),
}

impl From<WireError> for io::Error {
    fn from(e: WireError) -> Self {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

/// Encode a message body (version byte + postcard).
pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, WireError> {
    // Serialised straight after the version byte: a shard image is copied once, not twice.
    let out = postcard::to_extend(message, vec![WIRE_VERSION])
        .map_err(|e| WireError::Malformed(e.to_string()))?;
    if out.len() > MAX_FRAME {
        return Err(WireError::TooLarge {
            len: out.len(),
            max: MAX_FRAME,
        });
    }
    Ok(out)
}

/// Decode a message body; any defect is an error, never a panic.
pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, WireError> {
    let (&version, body) = bytes.split_first().ok_or(WireError::Empty)?;
    if version != WIRE_VERSION {
        return Err(WireError::Version(version));
    }
    let (message, rest) =
        postcard::take_from_bytes(body).map_err(|e| WireError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(WireError::Trailing(rest.len()));
    }
    Ok(message)
}

/// Bytes of inbound requests larger than [`SMALL_REQUEST`] (stores, of every peer together)
/// being read at once, in KiB. A request whose announced length does not fit what is left is
/// refused before any of it is buffered: peers that open every stream they can, each announcing
/// a shard and sending it slowly, cannot make this peer hold more than this. (Decoded requests
/// then wait for one of the swarm's inbound slots or are answered `Busy`, so they are bounded
/// too.)
pub const INBOUND_BUDGET_KIB: usize = 64 << 10;
static INBOUND_BUDGET: tokio::sync::Semaphore =
    tokio::sync::Semaphore::const_new(INBOUND_BUDGET_KIB);
/// Requests up to this size (fetches, checks, queries: a few dozen bytes each) are read within
/// a budget of their own ([`SMALL_BUDGET_KIB`]), so stalled stores can never starve them. One
/// peer reads at most 4 connections x 64 streams of them at once: 1 MiB of the 16.
pub const SMALL_REQUEST: usize = 4 << 10;
pub const SMALL_BUDGET_KIB: usize = 16 << 10;
static SMALL_BUDGET: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(SMALL_BUDGET_KIB);

/// The time a body of `len` bytes may take to arrive: 5 s, plus 1 s per MiB (a peer slower
/// than 1 MiB/s holds this peer's memory longer than it is worth).
pub fn transfer_deadline(len: usize) -> Duration {
    TRANSFER_BASE + Duration::from_secs((len >> 20) as u64)
}
const TRANSFER_BASE: Duration = Duration::from_secs(5);

/// Read one length-prefixed frame, refusing oversized ones before buffering them.
pub async fn read_frame<R: AsyncRead + Unpin>(io: &mut R, max: usize) -> io::Result<Vec<u8>> {
    let len = read_len(io, max).await?;
    read_body(io, len).await
}

/// Read one length-prefixed inbound request frame: [`read_frame`] within the inbound budgets
/// ([`INBOUND_BUDGET_KIB`], [`SMALL_BUDGET_KIB`]), refused before it is buffered when its
/// budget is spent, and given up when its body does not arrive by [`transfer_deadline`] (the
/// budget goes back at once instead of after the request timeout). Runs on tokio.
pub async fn read_inbound_frame<R: AsyncRead + Unpin>(
    io: &mut R,
    max: usize,
) -> io::Result<Vec<u8>> {
    let len = read_len(io, max).await?;
    let kib = u32::try_from(len.div_ceil(1024)).unwrap_or(u32::MAX);
    let budget = if len <= SMALL_REQUEST {
        &SMALL_BUDGET
    } else {
        &INBOUND_BUDGET
    };
    let Ok(_budget) = budget.try_acquire_many(kib) else {
        crate::metrics::metrics().inbound_refused.inc();
        return Err(io::Error::other(
            "this peer is reading as many requests as it may hold: refused",
        ));
    };
    tokio::time::timeout(transfer_deadline(len), read_body(io, len))
        .await
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("a request of {len} bytes did not arrive in time"),
            )
        })?
}

async fn read_len<R: AsyncRead + Unpin>(io: &mut R, max: usize) -> io::Result<usize> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(WireError::TooLarge { len, max }.into());
    }
    Ok(len)
}

async fn read_body<R: AsyncRead + Unpin>(io: &mut R, len: usize) -> io::Result<Vec<u8>> {
    // `len` is within the limit, so reserving it up front is bounded, and spares the
    // doublings of a growing buffer.
    let mut buf = Vec::with_capacity(len);
    let got = io.take(len as u64).read_to_end(&mut buf).await?;
    if got != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("frame cut short: {got} of {len} bytes"),
        ));
    }
    Ok(buf)
}

/// Write one length-prefixed frame.
pub async fn write_frame<W: AsyncWrite + Unpin>(io: &mut W, body: &[u8]) -> io::Result<()> {
    let len = u32::try_from(body.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(body).await?;
    io.flush().await
}

/// A request-response codec of length-prefixed, versioned postcard frames ([`encode`],
/// [`read_frame`]), each direction with its own size limit. One request per stream; the
/// writer closes its side after the frame.
pub struct FramedCodec<Req, Resp> {
    max_request: usize,
    max_response: usize,
    _messages: std::marker::PhantomData<fn() -> (Req, Resp)>,
}

impl<Req, Resp> FramedCodec<Req, Resp> {
    pub const fn new(max_request: usize, max_response: usize) -> Self {
        FramedCodec {
            max_request,
            max_response,
            _messages: std::marker::PhantomData,
        }
    }
}

impl<Req, Resp> Clone for FramedCodec<Req, Resp> {
    fn clone(&self) -> Self {
        Self::new(self.max_request, self.max_response)
    }
}

/// The request-response codec for [`PROTOCOL`].
pub type ShardCodec = FramedCodec<Request, Response>;

impl Default for ShardCodec {
    fn default() -> Self {
        Self::new(MAX_FRAME, MAX_FRAME)
    }
}

impl<Req, Resp> libp2p::request_response::Codec for FramedCodec<Req, Resp>
where
    Req: Serialize + for<'de> Deserialize<'de> + Send + 'static,
    Resp: Serialize + for<'de> Deserialize<'de> + Send + 'static,
{
    type Protocol = libp2p::StreamProtocol;
    type Request = Req;
    type Response = Resp;

    async fn read_request<T>(&mut self, _: &Self::Protocol, io: &mut T) -> io::Result<Req>
    where
        T: AsyncRead + Unpin + Send,
    {
        Ok(decode(&read_inbound_frame(io, self.max_request).await?)?)
    }

    async fn read_response<T>(&mut self, _: &Self::Protocol, io: &mut T) -> io::Result<Resp>
    where
        T: AsyncRead + Unpin + Send,
    {
        Ok(decode(&read_frame(io, self.max_response).await?)?)
    }

    async fn write_request<T>(
        &mut self,
        _: &Self::Protocol,
        io: &mut T,
        request: Req,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &encode(&request)?).await?;
        io.close().await
    }

    async fn write_response<T>(
        &mut self,
        _: &Self::Protocol,
        io: &mut T,
        response: Resp,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &encode(&response)?).await?;
        io.close().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;
    use proptest::prelude::*;

    fn chunk(b: u8) -> ChunkId {
        ChunkId([b; 32])
    }

    #[test]
    fn messages_round_trip() {
        let requests = [
            Request::Store {
                chunk: chunk(1),
                index: 3,
                image: vec![7; 1000],
            },
            Request::Fetch {
                chunk: chunk(2),
                index: 0,
            },
            Request::Check {
                chunk: chunk(3),
                index: 5,
            },
            Request::Delete {
                chunk: chunk(4),
                index: 1,
            },
            Request::FetchTrusting {
                chunk: chunk(5),
                index: 2,
            },
        ];
        for r in requests {
            assert_eq!(decode::<Request>(&encode(&r).unwrap()).unwrap(), r);
        }
        let responses = [
            Response::Stored,
            Response::Shard { image: vec![1, 2] },
            Response::Checked {
                intact: true,
                len: 9,
            },
            Response::Deleted { freed: 4 },
            Response::Refused(Refusal::Busy),
        ];
        for r in responses {
            assert_eq!(decode::<Response>(&encode(&r).unwrap()).unwrap(), r);
        }
    }

    #[test]
    fn images_encode_as_length_and_raw_bytes() {
        let r = Response::Shard {
            image: vec![1, 2, 3],
        };
        // version, variant 1, length 3, the bytes.
        assert_eq!(encode(&r).unwrap(), [WIRE_VERSION, 1, 3, 1, 2, 3]);
    }

    #[test]
    fn unknown_version_and_trailing_bytes_are_refused() {
        let mut bytes = encode(&Response::Stored).unwrap();
        bytes[0] = 9;
        assert!(matches!(
            decode::<Response>(&bytes),
            Err(WireError::Version(9))
        ));
        let mut bytes = encode(&Response::Stored).unwrap();
        bytes.push(0);
        assert!(matches!(
            decode::<Response>(&bytes),
            Err(WireError::Trailing(1))
        ));
        assert!(matches!(decode::<Response>(&[]), Err(WireError::Empty)));
    }

    #[test]
    fn oversized_frames_are_refused_before_reading() {
        let mut wire = ((MAX_FRAME + 1) as u32).to_be_bytes().to_vec();
        wire.extend_from_slice(&[0; 16]);
        let err = block_on(read_frame(&mut wire.as_slice(), MAX_FRAME)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let too_big = Request::Store {
            chunk: chunk(0),
            index: 0,
            image: vec![0; MAX_FRAME],
        };
        assert!(matches!(encode(&too_big), Err(WireError::TooLarge { .. })));
    }

    #[test]
    fn short_frames_are_an_error() {
        let mut wire = 100u32.to_be_bytes().to_vec();
        wire.extend_from_slice(&[1; 10]);
        let err = block_on(read_frame(&mut wire.as_slice(), MAX_FRAME)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode::<Request>(&bytes);
            let _ = decode::<Response>(&bytes);
            let _ = block_on(read_frame(&mut bytes.as_slice(), 256));
        }

        #[test]
        fn corrupted_valid_frames_never_panic(
            flip in 0usize..64, bit in 0u8..8, cut in 0usize..64, index in any::<u8>()
        ) {
            let mut bytes = encode(&Request::Store {
                chunk: chunk(index), index, image: vec![index; 20],
            }).unwrap();
            let at = flip % bytes.len();
            bytes[at] ^= 1 << bit;
            bytes.truncate(bytes.len().saturating_sub(cut % 8));
            let _ = decode::<Request>(&bytes);
        }

        #[test]
        fn framing_round_trips(body in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let mut wire = Vec::new();
            block_on(write_frame(&mut wire, &body)).unwrap();
            prop_assert_eq!(block_on(read_frame(&mut wire.as_slice(), 4096)).unwrap(), body);
        }
    }
}
