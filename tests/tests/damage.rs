//! Lost and corrupted shards, and plaintext never reaching the disk: `dfs get` returns the right
//! bytes with up to m shards of any chunk gone and repairs them; beyond m it fails naming the
//! lost chunk and writes nothing; `dfs verify` reports exactly what is missing or corrupt.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;

use dfs_tests::{random_bytes, Dfs};
use rand::{Rng, SeedableRng};

const CONFIG: &str = "[storage]\nchunk_size = 262144\n";

/// Shard files grouped by chunk.
fn by_chunk(dfs: &Dfs) -> BTreeMap<String, Vec<(PathBuf, u8)>> {
    let mut map: BTreeMap<String, Vec<(PathBuf, u8)>> = BTreeMap::new();
    for (path, chunk, index) in dfs.shard_files() {
        map.entry(chunk).or_default().push((path, index));
    }
    map
}

/// Damage one shard file in one of several ways.
fn damage(path: &PathBuf, how: u32, rng: &mut impl Rng) {
    match how % 4 {
        0 => fs::remove_file(path).unwrap(),
        1 => {
            let mut bytes = fs::read(path).unwrap();
            let i = rng.random_range(0..bytes.len());
            bytes[i] ^= 1 << rng.random_range(0..8);
            fs::write(path, bytes).unwrap();
        }
        2 => {
            let len = fs::metadata(path).unwrap().len();
            let f = fs::File::options().write(true).open(path).unwrap();
            f.set_len(rng.random_range(0..len)).unwrap();
        }
        _ => {
            let len = fs::metadata(path).unwrap().len() as usize;
            fs::write(path, random_bytes(len, rng.random())).unwrap();
        }
    }
}

#[test]
fn up_to_m_lost_shards_per_chunk_are_recovered_and_repaired() {
    let dfs = Dfs::new();
    dfs.configure(CONFIG);
    let src = dfs.path("file");
    let bytes = random_bytes(5 << 20 | 777, 21);
    fs::write(&src, &bytes).unwrap();
    let link = dfs.put(&src);
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let chunks = by_chunk(&dfs);
    assert!(chunks.len() > 20);
    for shards in chunks.values() {
        // m = 2: replicated chunks have 3 copies, erasure-coded ones 6 shards; damage 2 of each.
        let mut picked = shards.clone();
        for _ in 0..2 {
            let (path, _) = picked.swap_remove(rng.random_range(0..picked.len()));
            damage(&path, rng.random(), &mut rng);
        }
    }
    let verify = dfs.run(&["verify", &link]);
    assert_eq!(verify.code, Some(1), "damaged but recoverable: {verify:#?}");
    assert!(verify.stdout.contains("recoverable"), "{verify:#?}");

    let out = dfs.path("out");
    let run = dfs.run(&["get", &link, "-o", out.to_str().unwrap()]).ok();
    assert!(run.stderr.contains("rebuilt and rewritten"), "{run:#?}");
    assert!(fs::read(&out).unwrap() == bytes, "wrong bytes restored");
    // get repaired the store: everything is healthy again.
    let verify = dfs.run(&["verify", &link]).ok();
    assert!(verify.stdout.contains(" 0 damaged"), "{verify:#?}");
}

#[test]
fn verify_names_missing_and_corrupt_shards_and_repair_fixes_them() {
    let dfs = Dfs::new();
    dfs.configure(CONFIG);
    let src = dfs.path("file");
    fs::write(&src, random_bytes(1 << 20, 22)).unwrap();
    let link = dfs.put(&src);
    let chunks = by_chunk(&dfs);
    let (chunk, shards) = chunks.iter().find(|(_, s)| s.len() == 6).unwrap();
    let find = |i: u8| shards.iter().find(|s| s.1 == i).unwrap().0.clone();
    fs::remove_file(find(1)).unwrap();
    let mut corrupt = fs::read(find(4)).unwrap();
    corrupt[100] ^= 0xff;
    fs::write(find(4), corrupt).unwrap();

    let run = dfs.run(&["verify", &link]);
    assert_eq!(run.code, Some(1), "{run:#?}");
    let line = run
        .stdout
        .lines()
        .find(|l| l.contains(chunk.as_str()))
        .unwrap();
    assert!(
        line.contains("missing shards [1]") && line.contains("corrupt shards [4]"),
        "{line}"
    );

    let run = dfs.run(&["verify", "--repair", &link]).ok();
    assert!(run.stdout.contains("repaired"), "{run:#?}");
    let run = dfs.run(&["verify", &link]).ok();
    assert!(run.stdout.contains(" 0 damaged"), "{run:#?}");
}

#[test]
fn more_than_m_lost_fails_naming_the_chunk_and_writes_nothing() {
    let dfs = Dfs::new();
    dfs.configure(CONFIG);
    let src = dfs.path("file");
    fs::write(&src, random_bytes(2 << 20, 23)).unwrap();
    let link = dfs.put(&src);
    let chunks = by_chunk(&dfs);
    let (chunk, shards) = chunks.iter().find(|(_, s)| s.len() == 6).unwrap();
    for (path, _) in shards.iter().take(3) {
        fs::remove_file(path).unwrap();
    }
    let out = dfs.path("out");
    let run = dfs.run(&["get", &link, "-o", out.to_str().unwrap()]);
    let run = run.fails_with("is lost");
    assert!(
        run.stderr.contains(chunk.as_str()),
        "error must name the chunk: {run:#?}"
    );
    assert!(!out.exists(), "no output may be left behind");
    let leftovers: Vec<_> = fs::read_dir(dfs.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("partial"))
        .collect();
    assert!(leftovers.is_empty(), "partial output left: {leftovers:?}");

    let run = dfs.run(&["verify", &link]);
    assert_eq!(run.code, Some(3), "{run:#?}");
    assert!(run.stdout.contains("LOST"), "{run:#?}");
}

#[test]
fn shard_files_never_contain_plaintext() {
    let dfs = Dfs::new();
    let marker = b"PLAINTEXT-MARKER-dfs-should-never-store-this-in-the-clear";
    let content: Vec<u8> = marker.iter().copied().cycle().take(3 << 20).collect();
    let dir = dfs.path("secret");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("big"), &content).unwrap();
    fs::write(dir.join("small"), &marker[..]).unwrap();
    dfs.put(&dir);
    let shards = dfs.shard_files();
    assert!(!shards.is_empty());
    for (path, _, _) in shards {
        let bytes = fs::read(&path).unwrap();
        assert!(
            !bytes.windows(16).any(|w| w == &marker[..16]),
            "{} contains plaintext",
            path.display()
        );
    }
}
