//! The peer's configuration, read from `DATA/config.toml`; every field has a documented default.

use std::path::Path;

use dfs_placement::Layout;
use serde::{Deserialize, Serialize};

/// Settings of one data directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub storage: StorageConfig,
    pub versions: VersionsConfig,
    pub network: NetworkConfig,
    pub cache: CacheConfig,
    pub placement: PlacementConfig,
    pub volume: VolumeConfig,
}

/// Defaults for the volumes this peer creates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VolumeConfig {
    /// An OpenID Connect issuer URL: a volume created here admits only users vouched for by
    /// it (`dfs volume require-issuer`; the creator must reach the issuer to fetch its keys).
    /// Default: none.
    pub require_issuer: Option<String>,
    /// The client id dfs is registered under at that issuer. Default `dfs`.
    pub client_id: String,
}

impl Default for VolumeConfig {
    fn default() -> Self {
        Self {
            require_issuer: None,
            client_id: "dfs".to_string(),
        }
    }
}

/// How much of what this peer reads from other peers it keeps locally (as ciphertext, verified
/// again on every use).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Bytes of chunks fetched from other peers to keep on disk, in `DATA/cache/`, least
    /// recently used evicted first. 0 disables the disk cache; otherwise at least 1 MiB (a
    /// smaller cache would hold hardly a chunk). Default 1 GiB.
    pub disk_bytes: u64,
    /// Bytes of recently read chunks to keep in memory. 0 disables the memory cache; otherwise
    /// at least 1 MiB. Default 256 MiB.
    pub memory_bytes: u64,
    /// Admit a chunk to the disk cache on its second fetch from the network rather than its
    /// first, so a file streamed once does not push out what is read again and again (and a
    /// cold read does not pay for a disk write per chunk). Default true.
    pub disk_on_second_fetch: bool,
}

/// Smallest cache size accepted, other than 0 (disabled).
pub const MIN_CACHE_BYTES: u64 = 1 << 20;

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            disk_bytes: 1 << 30,
            memory_bytes: 256 << 20,
            disk_on_second_fetch: true,
        }
    }
}

impl CacheConfig {
    /// Check the settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (name, value) in [
            ("cache.disk_bytes", self.disk_bytes),
            ("cache.memory_bytes", self.memory_bytes),
        ] {
            if value != 0 && value < MIN_CACHE_BYTES {
                return Err(ConfigError::Invalid(format!(
                    "{name} must be 0 (disabled) or at least {MIN_CACHE_BYTES} bytes (1 MiB), got {value}"
                )));
            }
        }
        Ok(())
    }
}

/// How this peer takes part in the network. Command-line flags add to the lists and override the
/// single values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {
    /// Multiaddrs to listen on (TCP and/or QUIC). Default: an ephemeral TCP and QUIC port on
    /// 127.0.0.1, so nothing is exposed beyond this machine unless asked for.
    pub listen: Vec<String>,
    /// Bootstrap peers to dial at start and whenever they are lost (`/ip4/../tcp/../p2p/..`).
    pub peers: Vec<String>,
    /// Rendezvous points (trackers) to register at and discover peers through.
    pub rendezvous: Vec<String>,
    /// Serve as a rendezvous point (tracker) for others.
    pub rendezvous_server: bool,
    /// Serve as a relay for peers behind NAT.
    pub relay_server: bool,
    /// Find peers on the local network with mDNS (multicasts on every interface).
    pub mdns: bool,
    /// Failure domain label announced to others (a rack, a building, a region).
    pub zone: String,
    /// Seconds a peer may stay silent before it is declared dead (it is suspect at once).
    pub grace_secs: u64,
    /// Seconds between membership announcements.
    pub announce_secs: u64,
    /// Bytes of other peers' shards this peer will hold; 0 means as much as the disk allows.
    pub capacity: u64,
    /// Percent of the data directory's disk never filled with other peers' shards, so this
    /// peer's own metadata and files always have room.
    pub reserve_percent: u8,
    /// Most of this peer's capacity that any one other peer may fill, in percent: a peer that
    /// tries to store more is refused (`over its quota`) and stores elsewhere.
    pub peer_quota_percent: u8,
    /// A closed network: when not empty, only these peer ids may connect (every other
    /// connection is closed at once and its requests refused).
    pub allow: Vec<String>,
    /// A private network: the path of a key file (`dfs network-key FILE` makes one; the
    /// `swarm.key` format of IPFS). Only peers with the same key can connect; TCP only.
    pub key_file: String,
    /// Established connections in all, and to any one peer.
    pub max_connections: u32,
    pub max_connections_per_peer: u32,
    /// Address of the HTTP control API (a 127.0.0.1 port is chosen when empty).
    pub api: String,
    /// Provider records (DHT entries saying "this peer holds shards of chunk X") announced per
    /// second while the peer has been serving shard requests for over 30 s (shorter bursts
    /// pause them), and while it is idle. They are the fallback for finding a shard whose
    /// recorded holder lost it, so they go out in the background, never in the way of a read
    /// or a write.
    pub providers_per_sec_busy: u32,
    pub providers_per_sec_idle: u32,
    /// Move shards over bulk links: plain TCP connections on an ephemeral port of each TCP
    /// listen IP, keyed through the libp2p connection (shards are ciphertext already; see
    /// docs/network.md). Off: every shard goes through libp2p (Noise, Yamux).
    pub bulk_links: bool,
    /// Port of the bulk listeners (the same on every TCP listen IP); 0 = an ephemeral one.
    /// Set it where a firewall must let bulk links through.
    pub bulk_port: u16,
}

impl NetworkConfig {
    /// Check the settings (also after command-line flags changed them).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.grace_secs == 0 || self.announce_secs == 0 {
            return Err(ConfigError::Invalid(
                "network.grace_secs (--grace) and network.announce_secs must be at least 1".into(),
            ));
        }
        if self.zone.is_empty() || self.zone.len() > 64 {
            return Err(ConfigError::Invalid(
                "network.zone (--zone) must be 1 to 64 bytes".into(),
            ));
        }
        if self.providers_per_sec_idle == 0 {
            return Err(ConfigError::Invalid(
                "network.providers_per_sec_idle must be at least 1".into(),
            ));
        }
        if self.reserve_percent > 50 {
            return Err(ConfigError::Invalid(
                "network.reserve_percent must be at most 50".into(),
            ));
        }
        if !(1..=100).contains(&self.peer_quota_percent) {
            return Err(ConfigError::Invalid(
                "network.peer_quota_percent must be 1 to 100".into(),
            ));
        }
        for id in &self.allow {
            if id.parse::<libp2p::PeerId>().is_err() {
                return Err(ConfigError::Invalid(format!(
                    "network.allow: {id:?} is not a peer id (see `dfs status`)"
                )));
            }
        }
        if self.max_connections == 0 || self.max_connections_per_peer == 0 {
            return Err(ConfigError::Invalid(
                "network connection limits must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// Provider records announced per second while the peer has been serving shard requests for
/// a while, and while it has not (`[network] providers_per_sec_busy`/`_idle`).
pub const PROVIDERS_PER_SEC_BUSY: u32 = 4;
pub const PROVIDERS_PER_SEC_IDLE: u32 = 200;

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            listen: Vec::new(),
            peers: Vec::new(),
            rendezvous: Vec::new(),
            rendezvous_server: false,
            relay_server: false,
            mdns: false,
            zone: "default".into(),
            grace_secs: 10,
            announce_secs: 2,
            capacity: 0,
            reserve_percent: 5,
            peer_quota_percent: 50,
            allow: Vec::new(),
            key_file: String::new(),
            max_connections: 512,
            max_connections_per_peer: 4,
            api: String::new(),
            providers_per_sec_busy: PROVIDERS_PER_SEC_BUSY,
            providers_per_sec_idle: PROVIDERS_PER_SEC_IDLE,
            bulk_links: true,
            bulk_port: 0,
        }
    }
}

/// Which versions of a file the mounted volume keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VersionsConfig {
    /// Always keep this many of the newest versions of each file.
    pub keep_last: u32,
    /// Beyond those, keep the newest version of each day for this many days.
    pub keep_daily_days: u32,
}

impl Default for VersionsConfig {
    fn default() -> Self {
        Self {
            keep_last: 32,
            keep_daily_days: 30,
        }
    }
}

/// How content is cut, coded and stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Largest chunk, in bytes. Fixed-size chunking (docs/chunking.md): a file is cut at every
    /// multiple of this size, so an in-place edit rewrites only the chunks it touches.
    pub chunk_size: u32,
    /// Data shards per erasure-coded chunk (k).
    pub data_shards: u8,
    /// Parity shards per erasure-coded chunk (m): this many shards of any chunk may be lost.
    pub parity_shards: u8,
    /// Chunks whose ciphertext is smaller than this are stored as `parity_shards + 1` whole
    /// copies instead of being padded into `data_shards + parity_shards` tiny shards.
    pub replicate_below: u32,
    /// Children per interior node of a chunk tree (a 4 MiB chunk per leaf: 512 children cover
    /// 2 GiB per node).
    pub tree_fanout: u32,
    /// Threads that encrypt, hash, encode and store chunks in parallel; 0 means one per core.
    pub workers: u32,
    /// Compute the Poly1305 half of chunk encryption with dfs's own AVX-512 IFMA code where
    /// the CPU has IFMA (`node/src/crypto/poly1305.rs`, same bytes, about 1.6x the AEAD's
    /// speed). False: every chunk is sealed and opened by the chacha20poly1305 crate alone.
    /// It applies to the whole process that opens this data directory, from then until it
    /// exits. Default true.
    pub own_poly1305: bool,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            chunk_size: 4 << 20,
            data_shards: 4,
            parity_shards: 2,
            replicate_below: 16 << 10,
            tree_fanout: 512,
            workers: 0,
            own_poly1305: true,
        }
    }
}

/// Largest chunk size we accept: the design's 4 MiB bound, so shards stay small enough to move.
pub const MAX_CHUNK_SIZE: u32 = 4 << 20;

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not valid: {message}")]
    Parse { path: String, message: String },
    #[error("invalid setting: {0}")]
    Invalid(String),
}

impl Config {
    /// Load `path` if it exists, otherwise the defaults.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.display().to_string(),
                    source,
                })
            }
        };
        Self::parse(&text, path)
    }

    /// Parse and check the text of a config file (`path` only names it in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.display().to_string(),
            message: e.message().to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Check the settings against each other.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.storage;
        if s.chunk_size == 0 || s.chunk_size > MAX_CHUNK_SIZE {
            return Err(ConfigError::Invalid(format!(
                "storage.chunk_size must be between 1 and {MAX_CHUNK_SIZE} bytes, got {}",
                s.chunk_size
            )));
        }
        if self.versions.keep_last == 0 {
            return Err(ConfigError::Invalid(
                "versions.keep_last must be at least 1 (the current content)".into(),
            ));
        }
        self.network.validate()?;
        self.placement.validate()?;
        self.cache.validate()?;
        if s.tree_fanout < 2 {
            return Err(ConfigError::Invalid(
                "storage.tree_fanout must be at least 2".into(),
            ));
        }
        self.storage
            .erasure_layout()
            .validate()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        self.storage
            .small_layout()
            .validate()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        Ok(())
    }
}

impl StorageConfig {
    /// Layout of chunks at or above `replicate_below`.
    pub fn erasure_layout(&self) -> Layout {
        Layout::Erasure {
            data: self.data_shards,
            parity: self.parity_shards,
        }
    }

    /// Layout of small chunks: as many losses tolerated as the erasure layout.
    pub fn small_layout(&self) -> Layout {
        Layout::Replicated {
            copies: self.parity_shards.saturating_add(1),
        }
    }

    /// The layout for a chunk whose ciphertext is `len` bytes.
    pub fn layout_for(&self, len: usize) -> Layout {
        if len < self.replicate_below as usize {
            self.small_layout()
        } else {
            self.erasure_layout()
        }
    }

    /// Number of worker threads to use.
    pub fn worker_count(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n as usize,
        }
    }
}

/// Where shards go and how the network heals (`[placement]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlacementConfig {
    /// This peer keeps shards of its own chunks when rendezvous hashing picks it (false: a
    /// client that stores everything on other peers, e.g. a laptop).
    pub store_here: bool,
    /// Distinct peers that must hold shards before a write counts as durable; 0 means k+1.
    /// With fewer live peers than that, every live peer is required.
    pub durable_peers: u32,
    /// Milliseconds between repair rounds.
    pub repair_interval_ms: u64,
    /// Rebuilds, moves and drops planned per round at most.
    pub max_actions_per_round: u32,
    /// Bytes a second that repair and rebalancing may write (repairs go first).
    pub max_bytes_per_sec: u64,
    /// Shards re-verified per round by scrubbing at most (0 turns scrubbing off).
    pub scrub_shards_per_round: u32,
    /// Shard bytes a second that scrubbing has holders re-read and hash, on average (0 turns
    /// scrubbing off). The default re-verifies 100 GiB of shards in about 7 hours; each check
    /// costs the holder a disk read and a blake3 of the shard.
    pub scrub_bytes_per_sec: u64,
    /// Seconds a peer must have been present without a break (not dead, not restarted) before
    /// it is given new shards or rebalanced onto: a peer that comes and goes costs no moves.
    /// Peers already present when this peer started are trusted from the start.
    pub trust_after_secs: u64,
    /// Seconds a storage peer waits after it learns that a peer died before it checks the
    /// chunks it holds shards of and rebuilds what is missing (the writer, if it is still
    /// around, usually has by then); see `cluster::steward`.
    pub steward_delay_secs: u64,
    /// This peer runs for one command (`dfs put/get/verify` with a network): it is never a
    /// target, not even a reserve, and a write fails rather than stay here. Set by the CLI.
    #[serde(skip)]
    pub transient: bool,
}

impl Default for PlacementConfig {
    fn default() -> Self {
        Self {
            store_here: true,
            durable_peers: 0,
            repair_interval_ms: 2000,
            max_actions_per_round: 512,
            max_bytes_per_sec: 128 << 20,
            scrub_shards_per_round: 64,
            scrub_bytes_per_sec: 4 << 20,
            trust_after_secs: 120,
            steward_delay_secs: 20,
            transient: false,
        }
    }
}

impl PlacementConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.repair_interval_ms < 100 {
            return Err(ConfigError::Invalid(
                "placement.repair_interval_ms must be at least 100".into(),
            ));
        }
        if self.max_actions_per_round == 0 || self.max_bytes_per_sec == 0 {
            return Err(ConfigError::Invalid(
                "placement.max_actions_per_round and placement.max_bytes_per_sec must be at least 1"
                    .into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_round_trip() {
        let config = Config::default();
        config.validate().unwrap();
        let text = toml::to_string(&config).unwrap();
        assert_eq!(toml::from_str::<Config>(&text).unwrap(), config);
    }

    #[test]
    fn rejects_bad_settings() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        for bad in [
            "[storage]\nchunk_size = 0",
            "[storage]\nchunk_size = 99999999",
            "[storage]\nparity_shards = 0",
            "[storage]\nbogus = 1",
            "[cache]\ndisk_bytes = 1000",
            "[cache]\nmemory_bytes = 1048575",
            "[cache]\ndisk_bytes = -1",
            "[cache]\nbogus = 1",
            "[storage]\nown_poly1305 = 1",
            "not toml at all [",
        ] {
            std::fs::write(&path, bad).unwrap();
            assert!(Config::load(&path).is_err(), "accepted {bad:?}");
        }
        std::fs::write(&path, "[storage]\ndata_shards = 8\nparity_shards = 3").unwrap();
        let config = Config::load(&path).unwrap();
        assert_eq!(
            config.storage.erasure_layout(),
            Layout::Erasure { data: 8, parity: 3 }
        );
    }

    #[test]
    fn own_poly1305_defaults_on_and_turns_off() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        assert!(Config::load(&path).unwrap().storage.own_poly1305);
        std::fs::write(&path, "[storage]\nown_poly1305 = false").unwrap();
        let config = Config::load(&path).unwrap();
        assert!(!config.storage.own_poly1305);
        assert_eq!(config.storage.chunk_size, 4 << 20);
    }

    #[test]
    fn cache_section() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        let defaults = CacheConfig::default();
        assert_eq!(
            (defaults.disk_bytes, defaults.memory_bytes),
            (1 << 30, 256 << 20)
        );
        std::fs::write(&path, "[cache]\ndisk_bytes = 536870912").unwrap();
        let config = Config::load(&path).unwrap();
        assert_eq!(config.cache.disk_bytes, 512 << 20);
        assert_eq!(config.cache.memory_bytes, 256 << 20);
        // 0 disables either cache.
        std::fs::write(&path, "[cache]\ndisk_bytes = 0\nmemory_bytes = 0").unwrap();
        let config = Config::load(&path).unwrap();
        assert_eq!((config.cache.disk_bytes, config.cache.memory_bytes), (0, 0));
        std::fs::write(&path, "[cache]\nmemory_bytes = 4096").unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(err.contains("cache.memory_bytes"), "{err}");
    }
}
