//! OIDC login through the real CLI, against a real OpenID Connect provider: panva's
//! oidc-provider (OpenID certified), installed from the npm registry (`tests/oidc/`) and started
//! by each test on 127.0.0.1 with a fresh RSA signing key. The browser is curl following the
//! provider's redirects (with its cookies) back to the CLI's loopback listener; the provider's
//! login and consent pages finish at once for the test's account (`tests/oidc/provider.mjs`).
//!
//! - `dfs login --oidc ISSUER` makes a user bound to the provider's subject on first login, logs
//!   it in (its ops are signed with its key: it creates a volume and is its owner), and logs the
//!   same user in again later; that user has no passphrase to log in with.
//! - A provider whose clock runs two hours behind hands out tokens that expired before they
//!   came: refused, no user made, nobody logged in.
//! - A provider whose published keys are not the ones that signed the token (a forger): refused
//!   the same way.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

use dfs_tests::{Dfs, Peer, Run};

/// The provider's directory (package.json, lock file, provider.mjs).
fn provider_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("oidc")
}

/// Install the provider from the npm registry once (`npm ci`, by the committed lock file).
fn install_provider() {
    static INSTALLED: Mutex<bool> = Mutex::new(false);
    let mut done = INSTALLED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if *done || provider_dir().join("node_modules/oidc-provider").is_dir() {
        *done = true;
        return;
    }
    let out = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(provider_dir())
        .output()
        .expect(
            "the OIDC tests need Node.js and npm (to install oidc-provider from the npm registry)",
        );
    assert!(
        out.status.success(),
        "npm ci in tests/oidc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    *done = true;
}

/// A running provider; killed when dropped.
struct Provider {
    child: Child,
    issuer: String,
}

impl Provider {
    /// Start the provider with `env` (see provider.mjs) and wait for its issuer URL.
    fn start(env: &[(&str, &str)]) -> Self {
        install_provider();
        let mut child = Command::new("node")
            .arg(provider_dir().join("provider.mjs"))
            .envs(env.iter().copied())
            .env("DFS_OIDC_ACCOUNT", "alice")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the OIDC tests need Node.js (`node`) to run the provider");
        let stdout = child.stdout.take().expect("provider stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the provider's issuer");
        let issuer = line.trim().to_string();
        assert!(
            issuer.starts_with("http://127.0.0.1:"),
            "the provider did not start: {issuer:?}"
        );
        Self { child, issuer }
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A peer to log in on, and the browser the CLI opens: curl, following every redirect with a
/// cookie jar (the provider's session lives in cookies) back to the CLI's loopback page.
fn peer_with_browser() -> (Dfs, Peer, String) {
    let dfs = Dfs::new();
    let peer = dfs.node(&[]);
    let script = dfs.path("browser.sh");
    let jar = dfs.path("cookies.txt");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nexec curl -sS -L --max-redirs 20 --max-time 30 -c '{jar}' -b '{jar}' -o /dev/null \"$1\"\n",
            jar = jar.display()
        ),
    )
    .expect("write the browser script");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
        .expect("make the browser script executable");
    let browser = script.display().to_string();
    (dfs, peer, browser)
}

fn login(dfs: &Dfs, browser: &str, issuer: &str, extra: &[&str]) -> Run {
    let mut args = vec!["login", "--oidc", issuer, "--wait", "60s"];
    args.extend_from_slice(extra);
    dfs.run_with_env("BROWSER", browser, &args)
}

fn whoami(dfs: &Dfs) -> String {
    dfs.run(&["whoami"]).ok().stdout
}

#[test]
fn a_user_logs_in_through_a_real_oidc_provider() {
    let provider = Provider::start(&[]);
    let (dfs, _peer, browser) = peer_with_browser();

    let first = login(&dfs, &browser, &provider.issuer, &[]).ok();
    assert!(first.stdout.contains("logged in as alice"), "{first:#?}");
    assert!(first.stdout.contains("(a new user)"), "{first:#?}");
    assert!(first.stdout.contains(&provider.issuer), "{first:#?}");
    assert!(whoami(&dfs).starts_with("alice ("), "{}", whoami(&dfs));

    // The binding keeps the token the issuer signed, bound to alice's key.
    let binding: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dfs.data().join("users/alice.oidc")).expect("the binding file"),
    )
    .expect("the binding is JSON");
    assert_eq!(binding["issuer"], provider.issuer.as_str());
    assert_eq!(binding["subject"], "alice");
    assert_eq!(
        binding["id_token"].as_str().map(|t| t.split('.').count()),
        Some(3)
    );

    // Her ops are signed with her key: she makes a volume and is its owner.
    dfs.run(&["volume", "create", "team"]).ok();
    let members = dfs.run(&["volume", "members", "team"]).ok().stdout;
    assert!(
        members.contains("owner") && members.contains("(you)"),
        "{members}"
    );

    // Logged out and in again: the same user, not a new one.
    let id = dfs.run(&["whoami", "--json"]).ok().stdout;
    dfs.run(&["logout"]).ok();
    assert!(whoami(&dfs).starts_with("not logged in"));
    let again = login(&dfs, &browser, &provider.issuer, &[]).ok();
    assert!(!again.stdout.contains("new user"), "{again:#?}");
    assert_eq!(dfs.run(&["whoami", "--json"]).ok().stdout, id);

    // She has no passphrase: the passphrase login says how she logs in.
    dfs.run_with_passphrase("guess", &["login", "alice"])
        .bad_input("logs in through its issuer");
    // Another name for the same subject is refused: the subject is alice here already.
    login(&dfs, &browser, &provider.issuer, &["mallory"]).bad_input("is user \"alice\" here");
    assert!(!dfs.data().join("users/mallory.user").exists());
}

/// A refused login makes no user and logs nobody in.
fn assert_refused(dfs: &Dfs, run: Run, needle: &str) {
    let run = run.bad_input("ID token was refused");
    assert!(run.stderr.contains(needle), "{run:#?}");
    assert!(whoami(dfs).starts_with("not logged in"));
    let users = dfs.run(&["user", "list"]).ok().stdout;
    assert!(!users.contains("alice"), "{users}");
}

#[test]
fn an_expired_token_is_refused() {
    // The provider's clock runs two hours behind: its one-hour tokens expired an hour ago.
    let provider = Provider::start(&[("DFS_OIDC_SKEW_SECONDS", "7200")]);
    let (dfs, _peer, browser) = peer_with_browser();
    let run = login(&dfs, &browser, &provider.issuer, &[]);
    assert_refused(&dfs, run, "expired");
}

#[test]
fn a_forged_token_is_refused() {
    // The tokens are signed with a key the issuer does not publish.
    let provider = Provider::start(&[("DFS_OIDC_FORGE", "1")]);
    let (dfs, _peer, browser) = peer_with_browser();
    let run = login(&dfs, &browser, &provider.issuer, &[]);
    assert_refused(&dfs, run, "ignature");
}

#[test]
fn logins_that_cannot_start_say_why() {
    let (dfs, _peer, browser) = peer_with_browser();
    // Nothing listens there: discovery fails, clearly.
    let run = login(&dfs, &browser, "http://127.0.0.1:9", &[]);
    run.fails_with("cannot discover the OpenID Connect issuer");
    login(&dfs, &browser, "not a url", &[]).bad_input("bad issuer URL");
    dfs.run(&["login"]).bad_input("give the user to log in as");
}

/// Whether `dfs` lists volume `name` as joined, with `members` members.
fn has_joined(dfs: &Dfs, name: &str, members: u64) -> bool {
    let run = dfs.run(&["volume", "list", "--json"]).ok();
    let list: serde_json::Value = serde_json::from_str(&run.stdout).expect("volume list JSON");
    list.as_array()
        .into_iter()
        .flatten()
        .any(|v| v["name"] == name && v["joined"] == true && v["members"].as_u64() == Some(members))
}

/// A volume that requires the provider as its issuer: a user it has not vouched for is
/// refused by its own peer at once; a lying joiner (an attestation whose nonce is not bound to
/// its key) is refused by the member it hands its join to; a user the provider vouched for
/// through `dfs login --oidc` is admitted.
#[test]
fn a_volume_that_requires_an_issuer_admits_only_users_it_vouches_for() {
    let provider = Provider::start(&[]);
    let owner = Dfs::new();
    let _owner_peer = owner.node(&[]);
    owner.run(&["volume", "create", "team"]).ok();
    owner
        .run(&["volume", "require-issuer", "team", &provider.issuer])
        .ok();
    let ticket = owner
        .run(&["volume", "invite", "team"])
        .ok()
        .last_line()
        .to_string();

    // Not vouched for: the joiner's own peer says what to do.
    let (bob, _bob_peer, bob_browser) = peer_with_browser();
    bob.create_user("bob", "pw");
    bob.login("bob", "pw");
    bob.run(&["volume", "join", &ticket])
        .bad_input("admits only users vouched for by");

    // A liar: a real login, then the salt of its binding changed, so the token's nonce is not
    // bound to its key. The owner does not take the join.
    let (liar, _liar_peer, liar_browser) = peer_with_browser();
    login(&liar, &liar_browser, &provider.issuer, &[]).ok();
    let path = liar.data().join("users/alice.oidc");
    let mut binding: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("binding")).expect("binding JSON");
    binding["salt"] = serde_json::Value::from("00".repeat(16));
    std::fs::write(&path, binding.to_string()).expect("rewrite the binding");
    liar.run(&["volume", "join", &ticket]).ok();
    std::thread::sleep(std::time::Duration::from_secs(4));
    assert!(!has_joined(&liar, "team", 2), "the liar's join was taken");
    assert!(has_joined(&owner, "team", 1), "the owner took a lying join");

    // Vouched for: bob's peer logs in through the provider, and the join counts.
    login(&bob, &bob_browser, &provider.issuer, &[]).ok();
    bob.run(&["volume", "join", &ticket]).ok();
    dfs_tests::wait_for(
        std::time::Duration::from_secs(30),
        "the attested joiner to be a member on both peers",
        || (has_joined(&owner, "team", 2) && has_joined(&bob, "team", 2)).then_some(()),
    );
    let log = owner.run(&["volume", "log", "team"]).ok().stdout;
    assert!(log.contains(&provider.issuer), "{log}");
    assert!(log.contains("attestation"), "{log}");
}
