//! Chunk trees: how a byte stream of any size is named by one small reference.
//!
//! The stream's chunks are the leaves (level 0). Up to `fanout` consecutive references are
//! serialised into an interior node, itself stored as a chunk (level 1), and so on until one
//! reference remains: the root, kept in a [`BlobRef`] with the tree's height and the total size.
//! Interior nodes are encrypted like any chunk, so the tree reveals nothing without the root key.
//! Building is streaming (memory is `height * fanout` references); reading walks depth-first.

use dfs_placement::erasure::ShardCoder;
use dfs_placement::ChunkId;
use serde::{Deserialize, Serialize};

use crate::chunk::{ChunkError, ChunkHealth, ChunkRef};
use crate::crypto::KeyScope;
use crate::meta::OwnerId;
use crate::pipeline::Pipeline;

const NODE_FORMAT_V1: u8 = 1;
/// Deepest tree we accept when reading: 2^64 bytes need far fewer levels at any sane fanout.
const MAX_LEVEL: u8 = 16;

/// A stored byte stream: its size and the root of its chunk tree (none for an empty stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRef {
    pub size: u64,
    /// Height of the tree: 0 when the root is the only data chunk.
    pub level: u8,
    pub root: Option<ChunkRef>,
}

impl BlobRef {
    pub const EMPTY: BlobRef = BlobRef {
        size: 0,
        level: 0,
        root: None,
    };
}

/// One child of an interior node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Child {
    pub chunk: ChunkRef,
    /// Plaintext bytes of the stream under this child.
    pub bytes: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Node {
    format: u8,
    level: u8,
    children: Vec<Child>,
}

/// A tree node that cannot be right.
#[derive(Debug, thiserror::Error)]
#[error("chunk tree node {id} is malformed: {detail}")]
pub struct MalformedTree {
    pub id: ChunkId,
    pub detail: String,
}

/// The children of interior node `id` (decrypted: `plain`) at `level` of a tree whose parent
/// says it holds `bytes`: refused unless the node is well formed, at that level, not empty,
/// and its children add up to `bytes`. A link's author chooses every byte of it (fuzzed:
/// fuzz/fuzz_targets/link_tree.rs).
pub fn decode_node(
    plain: &[u8],
    id: ChunkId,
    level: u8,
    bytes: u64,
) -> Result<Vec<Child>, MalformedTree> {
    let malformed = |detail: String| MalformedTree { id, detail };
    let node: Node = postcard::from_bytes(plain).map_err(|e| malformed(e.to_string()))?;
    if node.format != NODE_FORMAT_V1 {
        return Err(malformed(format!("unknown node format {}", node.format)));
    }
    if node.level != level {
        return Err(malformed(format!(
            "level {} where {level} was expected",
            node.level
        )));
    }
    if node.children.is_empty() {
        return Err(malformed("no children".into()));
    }
    let total = node
        .children
        .iter()
        .try_fold(0u64, |acc, c| acc.checked_add(c.bytes));
    if total != Some(bytes) {
        return Err(malformed(format!(
            "children hold {total:?} bytes, parent says {bytes}"
        )));
    }
    Ok(node.children)
}

/// Why a tree could not be built or walked.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error(transparent)]
    Chunk(#[from] ChunkError),
    #[error(transparent)]
    Malformed(#[from] MalformedTree),
}

/// Builds a chunk tree from leaf references pushed in stream order.
pub struct TreeBuilder<'r> {
    pipeline: &'r Pipeline,
    owner: OwnerId,
    /// The key scope of the nodes it stores.
    scope: KeyScope,
    fanout: usize,
    /// `levels[i]` holds the children of the level-`i + 1` node being filled.
    levels: Vec<Vec<Child>>,
    coder: ShardCoder,
}

impl<'r> TreeBuilder<'r> {
    /// A builder whose nodes' keys may be given out (a link's tree).
    pub fn new(pipeline: &'r Pipeline, owner: OwnerId) -> Self {
        Self::new_in(pipeline, owner, KeyScope::Shareable)
    }

    /// A builder whose nodes are stored with keys of `scope`.
    pub fn new_in(pipeline: &'r Pipeline, owner: OwnerId, scope: KeyScope) -> Self {
        Self {
            pipeline,
            owner,
            scope,
            fanout: pipeline.repo().config().storage.tree_fanout.max(2) as usize,
            levels: vec![Vec::new()],
            coder: ShardCoder::default(),
        }
    }

    /// Append the next data chunk of the stream.
    pub fn push_leaf(&mut self, chunk: ChunkRef) -> Result<(), ChunkError> {
        self.push(
            0,
            Child {
                chunk,
                bytes: chunk.len as u64,
            },
        )
    }

    fn push(&mut self, level: usize, child: Child) -> Result<(), ChunkError> {
        if self.levels.len() <= level {
            self.levels.push(Vec::new());
        }
        self.levels[level].push(child);
        if self.levels[level].len() >= self.fanout {
            self.flush(level)?;
        }
        Ok(())
    }

    /// Store the node filled at `levels[level]` and push its reference one level up.
    fn flush(&mut self, level: usize) -> Result<(), ChunkError> {
        let children = std::mem::take(&mut self.levels[level]);
        let bytes = children.iter().map(|c| c.bytes).sum();
        let node = Node {
            format: NODE_FORMAT_V1,
            level: level as u8 + 1,
            children,
        };
        // Serialising a plain struct into a Vec cannot fail.
        let encoded = postcard::to_stdvec(&node).unwrap_or_default();
        let chunk =
            self.pipeline
                .put_chunk_in(self.scope, &self.owner, encoded, &mut self.coder)?;
        self.push(level + 1, Child { chunk, bytes })
    }

    /// Close the tree and return its root.
    pub fn finish(mut self) -> Result<BlobRef, ChunkError> {
        let mut level = 0;
        loop {
            let higher_empty = self.levels[level + 1..].iter().all(Vec::is_empty);
            if higher_empty {
                match self.levels[level].len() {
                    0 => return Ok(BlobRef::EMPTY),
                    1 => {
                        let root = self.levels[level][0];
                        return Ok(BlobRef {
                            size: root.bytes,
                            level: level as u8,
                            root: Some(root.chunk),
                        });
                    }
                    _ => {}
                }
            }
            if !self.levels[level].is_empty() {
                self.flush(level)?;
            }
            level += 1;
        }
    }
}

/// Walks a chunk tree depth-first and yields its data chunks in stream order.
pub struct LeafWalker<'r> {
    pipeline: &'r Pipeline,
    coder: ShardCoder,
    repair: bool,
    /// (children, next index, level of the node holding them)
    stack: Vec<(Vec<Child>, usize, u8)>,
    /// The single data chunk of a level-0 tree, not yet yielded.
    single: Option<Child>,
    /// Health of every interior node read so far.
    pub interior: Vec<ChunkHealth>,
}

impl<'r> LeafWalker<'r> {
    pub fn new(pipeline: &'r Pipeline, blob: &BlobRef, repair: bool) -> Result<Self, TreeError> {
        let mut walker = Self {
            pipeline,
            coder: ShardCoder::default(),
            repair,
            stack: Vec::new(),
            single: None,
            interior: Vec::new(),
        };
        if let Some(root) = blob.root {
            let child = Child {
                chunk: root,
                bytes: blob.size,
            };
            if blob.level == 0 {
                walker.single = Some(child);
            } else {
                walker.descend(child, blob.level)?;
            }
        }
        Ok(walker)
    }

    fn descend(&mut self, child: Child, level: u8) -> Result<(), TreeError> {
        let id = child.chunk.id;
        let malformed = |detail: String| MalformedTree { id, detail };
        if level > MAX_LEVEL {
            return Err(malformed(format!("tree deeper than {MAX_LEVEL} levels")).into());
        }
        let (plain, health) =
            self.pipeline
                .get_chunk(&child.chunk, &mut self.coder, self.repair)?;
        self.interior.push(health);
        let children = decode_node(&plain, id, level, child.bytes)?;
        self.stack.push((children, 0, level));
        Ok(())
    }

    /// The next data chunk and the number of stream bytes it must hold.
    pub fn next_leaf(&mut self) -> Result<Option<(ChunkRef, u64)>, TreeError> {
        if let Some(single) = self.single.take() {
            return Ok(Some((single.chunk, single.bytes)));
        }
        loop {
            let Some((children, next, level)) = self.stack.last_mut() else {
                return Ok(None);
            };
            let Some(child) = children.get(*next).copied() else {
                self.stack.pop();
                continue;
            };
            *next += 1;
            let level = *level;
            if level == 1 {
                return Ok(Some((child.chunk, child.bytes)));
            }
            self.descend(child, level - 1)?;
        }
    }
}
