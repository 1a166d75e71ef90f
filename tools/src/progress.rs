//! Progress bars on stderr for the long one-shot commands (`dfs put`, `dfs get`, `dfs verify`).
//!
//! Drawn only when stderr is a terminal: in pipes and tests every bar is indicatif's hidden
//! target and no sampling thread runs, so output is unchanged. The fs crate's `put_path`,
//! `get_link` and `verify_link` take no progress callback, so a bar is fed from outside:
//! - [`Bar::wrap_write`] counts bytes exactly where the CLI owns the writer (`dfs get -o -`);
//! - [`IoProgress`] samples this process's I/O counters (`/proc/self/io`: bytes passed to
//!   `read(2)`/`write(2)` and kin, which socket `send`/`recv` do not add to) ten times a second.
//!   For a put the input files dominate what is read, for a get the restored files what is
//!   written: the bar tracks them closely and is clamped to the known total.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Which counter of `/proc/self/io` measures the work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoCounter {
    /// `rchar`: bytes read (a put reading its input, a verify reading shards).
    Read,
    /// `wchar`: bytes written (a get writing the restored files).
    Written,
}

impl IoCounter {
    fn key(self) -> &'static str {
        match self {
            IoCounter::Read => "rchar",
            IoCounter::Written => "wchar",
        }
    }
}

/// True when progress should be drawn: stderr is a terminal.
pub fn visible() -> bool {
    std::io::stderr().is_terminal()
}

/// A byte bar: with a length once [`ProgressBar::set_length`] is called, a spinner until then.
fn byte_bar(label: &str) -> ProgressBar {
    if !visible() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(spinner_style());
    bar.set_message(label.to_string());
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {msg} {bytes} ({binary_bytes_per_sec}) {elapsed}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} ({binary_bytes_per_sec}, {eta} left)",
    )
    .map(|s| s.progress_chars("=> "))
    .unwrap_or_else(|_| ProgressStyle::default_bar())
}

/// Give `bar` a total: it turns from a spinner into a bar.
fn set_total(bar: &ProgressBar, total: u64) {
    bar.set_length(total);
    bar.set_style(bar_style());
}

/// A bar fed by the process's I/O counters from a sampling thread; inert when not visible.
pub struct IoProgress {
    bar: ProgressBar,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl IoProgress {
    /// Start a bar labelled `label` counting `counter` from now. `total` runs on the sampling
    /// thread (it may walk a tree or read a record) and gives the bar its length.
    pub fn start(
        label: &str,
        counter: IoCounter,
        total: impl FnOnce() -> Option<u64> + Send + 'static,
    ) -> Self {
        let bar = byte_bar(label);
        let stop = Arc::new(AtomicBool::new(false));
        if bar.is_hidden() {
            return Self {
                bar,
                stop,
                thread: None,
            };
        }
        let start = read_counter(counter).unwrap_or(0);
        let (b, s) = (bar.clone(), Arc::clone(&stop));
        let thread = std::thread::Builder::new()
            .name("dfs-progress".into())
            .spawn(move || {
                let total = total();
                if let Some(t) = total {
                    set_total(&b, t);
                }
                while !s.load(Ordering::Relaxed) {
                    if let Some(now) = read_counter(counter) {
                        let done = now.saturating_sub(start);
                        b.set_position(total.map_or(done, |t| done.min(t)));
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
            .ok();
        Self { bar, stop, thread }
    }

    /// Stop sampling and erase the bar (the command prints its own summary).
    pub fn finish(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.bar.finish_and_clear();
    }
}

impl Drop for IoProgress {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// A byte bar the caller advances, e.g. through [`Bar::wrap_write`].
pub struct Bar(ProgressBar);

impl Bar {
    /// A bar labelled `label`, with `total` bytes when known; hidden when not visible.
    pub fn bytes(label: &str, total: Option<u64>) -> Self {
        let bar = byte_bar(label);
        if let Some(t) = total.filter(|_| !bar.is_hidden()) {
            set_total(&bar, t);
        }
        Self(bar)
    }

    /// `out`, counting into this bar every byte written through it.
    pub fn wrap_write<'a, W: Write + 'a>(&self, out: W) -> impl Write + 'a {
        self.0.wrap_write(out)
    }

    pub fn finish(self) {
        self.0.finish_and_clear();
    }
}

/// The current value of `counter` in `/proc/self/io`, if readable.
fn read_counter(counter: IoCounter) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/io").ok()?;
    proc_io_value(&text, counter.key())
}

/// The value of `key` in a `/proc/PID/io` page (`rchar: 123` lines).
pub fn proc_io_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k.trim() == key).then(|| v.trim().parse().ok())?
    })
}

/// Bytes of regular files under `path` (symlinks not followed): what a put of it reads.
pub fn tree_bytes(path: &Path) -> u64 {
    let mut total = 0;
    let mut todo: Vec<PathBuf> = vec![path.to_path_buf()];
    while let Some(p) = todo.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.is_file() {
            total += meta.len();
        } else if meta.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&p) {
                todo.extend(entries.filter_map(|e| Some(e.ok()?.path())));
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_io_parses() {
        let page = "rchar: 4242\nwchar: 17\nsyscr: 9\nread_bytes: 0\n";
        assert_eq!(proc_io_value(page, "rchar"), Some(4242));
        assert_eq!(proc_io_value(page, "wchar"), Some(17));
        assert_eq!(proc_io_value(page, "cancelled_write_bytes"), None);
        assert_eq!(proc_io_value("rchar: x\n", "rchar"), None);
    }

    #[test]
    fn tree_sizes_add_up() {
        let dir = std::env::temp_dir().join(format!("dfs-progress-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("a"), vec![0u8; 1000]).unwrap();
        std::fs::write(dir.join("sub/b"), vec![0u8; 24]).unwrap();
        std::os::unix::fs::symlink("a", dir.join("link")).unwrap();
        assert_eq!(tree_bytes(&dir), 1024);
        assert_eq!(tree_bytes(&dir.join("a")), 1000);
        assert_eq!(tree_bytes(&dir.join("missing")), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn hidden_when_not_a_terminal() {
        // Under `cargo test` stderr is captured or a pipe in CI; either way nothing may draw.
        if visible() {
            return;
        }
        let p = IoProgress::start("x", IoCounter::Read, || Some(1));
        assert!(p.thread.is_none());
        p.finish();
        let bar = Bar::bytes("y", Some(10));
        let mut out = Vec::new();
        bar.wrap_write(&mut out).write_all(b"hello").unwrap();
        bar.finish();
        assert_eq!(out, b"hello");
    }
}
