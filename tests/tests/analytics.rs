//! Usage analytics through a real mount: files read more often rank higher, bytes and opens
//! are counted per file and per user, and the totals survive a remount.

use std::io::Write;

use dfs_tests::{fuse_available, random_bytes, Dfs};

fn stats(dfs: &Dfs) -> serde_json::Value {
    let run = dfs.run(&["stats", "--json"]).ok();
    serde_json::from_str(&run.stdout).expect("stats JSON")
}

#[test]
fn popular_files_and_users_are_counted() {
    if !fuse_available() {
        return;
    }
    let dfs = Dfs::new();
    let mnt = dfs.path("mnt");
    std::fs::create_dir_all(&mnt).expect("mkdir");
    let mount = dfs.mount_at(&mnt, &[]);
    let (hot, cold) = (random_bytes(300_000, 1), random_bytes(100_000, 2));
    for (name, data) in [("hot", &hot), ("cold", &cold)] {
        let mut f = std::fs::File::create(mnt.join(name)).expect("create");
        f.write_all(data).expect("write");
        f.sync_all().expect("fsync");
    }
    // Three separate downloads of `hot`, one of `cold`. Opens are counted exactly; bytes read
    // through FUSE are not (the kernel's page cache answers repeated reads).
    for _ in 0..3 {
        assert_eq!(std::fs::read(mnt.join("hot")).expect("read"), hot);
    }
    assert_eq!(std::fs::read(mnt.join("cold")).expect("read"), cold);

    let s = stats(&dfs);
    let files = s["popular_files"].as_array().expect("files");
    assert_eq!(files[0]["path"], "/hot", "{s}");
    assert_eq!(files[0]["opens"], 3, "{s}");
    assert_eq!(files[0]["bytes_written"], hot.len() as u64);
    let cold_stats = files.iter().find(|f| f["path"] == "/cold").expect("cold");
    assert_eq!(cold_stats["opens"], 1);
    let users = s["users"].as_array().expect("users");
    // SAFETY: getuid has no preconditions.
    let me = unsafe { libc::getuid() };
    let user = users.iter().find(|u| u["uid"] == me).expect("this user");
    assert_eq!(user["active"], true);
    assert_eq!(
        user["bytes_written"].as_u64(),
        Some((hot.len() + cold.len()) as u64)
    );
    assert_eq!(s["active_users"], 1);
    let text = dfs.run(&["stats", "--top", "1"]).ok().stdout;
    assert!(text.contains("/hot") && !text.contains("/cold"), "{text}");

    // Counts are saved when the mount ends, and a new mount adds to them.
    assert_eq!(mount.unmount(), Some(0));
    let _mount = dfs.mount_at(&mnt, &[]);
    assert_eq!(std::fs::read(mnt.join("hot")).expect("read"), hot);
    let s = stats(&dfs);
    assert_eq!(s["popular_files"][0]["path"], "/hot");
    assert_eq!(s["popular_files"][0]["opens"], 4, "{s}");
}
