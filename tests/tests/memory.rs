//! Streaming: peak RSS of `dfs put` and `dfs get` of a 4 GiB file stays far below 300 MiB.
//!
//! The file is sparse (all zeros), so it costs no disk and every chunk dedups after the first;
//! memory use does not depend on content: every chunk is still read, keyed, encrypted and
//! hashed on put, and read, verified, decoded and decrypted on get. This test is alone in its
//! binary so that nothing else runs while it measures its children.

use std::fs;
use std::process::Stdio;

use dfs_tests::Dfs;

const LIMIT_KIB: i64 = 300 * 1024;

/// Run `cmd` to completion and return (exit code, peak RSS in KiB) from wait4's rusage.
// The child is reaped by wait4 below, which std's Child::wait cannot do (it drops the rusage).
#[allow(clippy::zombie_processes)]
fn run_measured(cmd: &mut std::process::Command) -> (i32, i64) {
    let child = cmd.spawn().expect("spawn dfs");
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `child.id()` is our own un-waited child; status and usage are valid out-pointers.
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as libc::pid_t, "wait4 failed");
    (libc::WEXITSTATUS(status), usage.ru_maxrss)
}

#[test]
fn put_and_get_of_4_gib_stream_in_bounded_memory() {
    let dfs = Dfs::new();
    let big = dfs.path("sparse-4g");
    fs::File::create(&big).unwrap().set_len(4 << 30).unwrap();

    let mut put = dfs.command(&["put", big.to_str().unwrap()]);
    let out = dfs.path("put.out");
    put.stdout(fs::File::create(&out).unwrap());
    let (code, put_rss) = run_measured(&mut put);
    assert_eq!(code, 0, "put failed");
    let link = fs::read_to_string(&out)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .to_string();

    let mut get = dfs.command(&["get", &link, "-o", "-"]);
    get.stdout(Stdio::null()).stderr(Stdio::null());
    let (code, get_rss) = run_measured(&mut get);
    assert_eq!(code, 0, "get failed");

    eprintln!(
        "peak RSS: put {} MiB, get {} MiB",
        put_rss / 1024,
        get_rss / 1024
    );
    assert!(put_rss < LIMIT_KIB, "dfs put peaked at {put_rss} KiB");
    assert!(get_rss < LIMIT_KIB, "dfs get peaked at {get_rss} KiB");
}
