//! `dfs user` (make, list, export and import users), `dfs login`, `dfs logout`, `dfs whoami`
//! and `dfs profile`.
//!
//! Users live in the data directory (`DATA/users/NAME.user`, sealed under a passphrase), so
//! making, exporting and importing them needs no running peer; logging in does: the running
//! peer unseals the key and signs the ops of the caller's uid with it until `dfs logout`.

use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use dfs_node::{
    KdfParams, LoggedOut, Login, Logout, ProfileView, SealedUser, SessionInfo, UserError, UserStore,
};

use crate::api_client::{api_get, api_post};
use crate::BadInput;

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Make a user: a new Ed25519 key, sealed under a passphrase (argon2id) in DATA/users/
    Create {
        name: String,
        #[command(flatten)]
        passphrase: PassphraseArgs,
        /// Memory of the passphrase hashing (argon2id), MiB; at least 8
        #[arg(long, default_value_t = 64, value_name = "MIB")]
        kdf_memory: u32,
        /// Passes of the passphrase hashing over its memory
        #[arg(long, default_value_t = 3, value_name = "N")]
        kdf_passes: u32,
    },
    /// List the users of this data directory
    List {
        #[arg(long)]
        json: bool,
    },
    /// Print a user as one line of text (still sealed under its passphrase), to import on
    /// another device
    Export { name: String },
    /// Add a user exported elsewhere (FILE, or - for standard input)
    Import {
        file: PathBuf,
        /// Replace a user of the same name
        #[arg(long)]
        replace: bool,
    },
}

/// Where a passphrase comes from: a file, the environment, or the terminal.
#[derive(Debug, Args)]
pub struct PassphraseArgs {
    /// Read the passphrase from the first line of this file [default: $DFS_PASSPHRASE, or ask
    /// on the terminal]
    #[arg(long, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
}

impl PassphraseArgs {
    /// The passphrase; `confirm` asks twice on a terminal.
    fn read(&self, confirm: bool) -> Result<String> {
        read_secret(
            self.passphrase_file.as_deref(),
            "DFS_PASSPHRASE",
            "passphrase",
            confirm,
        )
    }
}

/// Where a link's password comes from: a file, the environment, or the terminal.
#[derive(Debug, Args)]
pub struct PasswordArgs {
    /// Read the password of a password-protected link from the first line of this file
    /// [default: $DFS_PASSWORD, or ask on the terminal]
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
}

impl PasswordArgs {
    /// The password; `confirm` asks twice on a terminal.
    pub fn read(&self, confirm: bool) -> Result<String> {
        read_secret(
            self.password_file.as_deref(),
            "DFS_PASSWORD",
            "password",
            confirm,
        )
    }
}

/// A secret from the first line of `file`, else the environment variable `env`, else the
/// terminal (without echo; twice with `confirm`). Without any of them: bad input, not a hang.
fn read_secret(file: Option<&Path>, env: &str, what: &str, confirm: bool) -> Result<String> {
    if let Some(path) = file {
        let open = std::fs::File::open(path)
            .with_context(|| format!("cannot read the {what} file {}", path.display()))?;
        let mut line = String::new();
        std::io::BufReader::new(open)
            .read_line(&mut line)
            .with_context(|| format!("cannot read the {what} file {}", path.display()))?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_string());
    }
    if let Ok(secret) = std::env::var(env) {
        return Ok(secret);
    }
    if !std::io::stdin().is_terminal() {
        let flag = if what == "password" {
            "--password-file"
        } else {
            "--passphrase-file"
        };
        return Err(BadInput(format!(
            "no {what}: give {flag} FILE or {env}, or run in a terminal"
        ))
        .into());
    }
    let secret = rpassword::prompt_password(format!("{what}: "))?;
    if confirm && rpassword::prompt_password(format!("{what} again: "))? != secret {
        return Err(BadInput(format!("the two {what}s differ")).into());
    }
    Ok(secret)
}

/// Parse a link as typed; a password-protected one is opened with the password of
/// `password`. Malformed links and wrong passwords are bad input.
pub fn resolve_link(text: &str, password: &PasswordArgs) -> Result<dfs_fs::ShareLink> {
    let bad = |e: dfs_fs::LinkError| anyhow::Error::from(BadInput(e.to_string()));
    match text.parse::<dfs_fs::link::AnyLink>().map_err(bad)? {
        dfs_fs::link::AnyLink::Open(link) => Ok(link),
        dfs_fs::link::AnyLink::Locked(locked) => {
            let password = password.read(false)?;
            locked.unlock(password.as_bytes()).map_err(|e| match e {
                dfs_fs::LinkError::Passphrase(dfs_node::passphrase::PassphraseError::Wrong) => {
                    BadInput("wrong password for this link".into()).into()
                }
                other => bad(other),
            })
        }
    }
}

/// The user's own errors (a wrong name or passphrase, a damaged export) are bad input.
fn user_error(e: UserError) -> anyhow::Error {
    match e {
        UserError::Io { .. } => e.into(),
        other => BadInput(other.to_string()).into(),
    }
}

pub fn run(data: &Path, command: UserCommand) -> Result<ExitCode> {
    let store = UserStore::new(data);
    match command {
        UserCommand::Create {
            name,
            passphrase,
            kdf_memory,
            kdf_passes,
        } => {
            dfs_node::check_user_name(&name).map_err(user_error)?;
            let kdf = KdfParams {
                memory_kib: kdf_memory.saturating_mul(1024),
                passes: kdf_passes,
                lanes: 1,
            };
            let passphrase = passphrase.read(true)?;
            let user = store
                .create(&name, passphrase.as_bytes(), kdf)
                .map_err(user_error)?;
            println!("created user {} ({})", user.name(), user.id());
        }
        UserCommand::List { json } => {
            let users = store.list().map_err(user_error)?;
            if json {
                let rows: Vec<_> = users
                    .iter()
                    .map(|u| serde_json::json!({"name": u.name(), "id": u.id().to_string()}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else if users.is_empty() {
                println!("no users yet (make one with `dfs user create NAME`)");
            } else {
                println!("{:<32}  KEY", "NAME");
                for u in users {
                    println!("{:<32}  {}", u.name(), u.id());
                }
            }
        }
        UserCommand::Export { name } => {
            println!("{}", store.load(&name).map_err(user_error)?.to_text());
        }
        UserCommand::Import { file, replace } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("cannot read standard input")?
            } else {
                std::fs::read_to_string(&file)
                    .with_context(|| format!("cannot read {}", file.display()))?
            };
            let user = SealedUser::from_text(&text).map_err(user_error)?;
            store.save(&user, replace).map_err(user_error)?;
            println!("imported user {} ({})", user.name(), user.id());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// This process's uid.
fn own_uid() -> u32 {
    // SAFETY: getuid has no preconditions.
    unsafe { libc::getuid() }
}

/// The uid a login or logout is for: the caller's own, or (root only) another.
pub(crate) fn target_uid(uid: Option<u32>) -> Result<u32> {
    let own = own_uid();
    match uid {
        Some(uid) if uid != own && own != 0 => Err(BadInput(format!(
            "only root may log in or out for another uid ({uid}); you are uid {own}"
        ))
        .into()),
        Some(uid) => Ok(uid),
        None => Ok(own),
    }
}

/// `dfs login NAME`: the running peer signs this uid's ops as the user from now on.
pub fn login(
    data: &Path,
    name: String,
    uid: Option<u32>,
    passphrase: &PassphraseArgs,
) -> Result<ExitCode> {
    let uid = target_uid(uid)?;
    // Checked here first, so a wrong name gets its answer before a passphrase is asked.
    UserStore::new(data).load(&name).map_err(user_error)?;
    let passphrase = passphrase.read(false)?;
    let session: SessionInfo = api_post(
        data,
        "/v1/login",
        &Login {
            user: name,
            passphrase,
            uid,
        },
    )?;
    println!(
        "logged in as {} ({}) for uid {}",
        session.user,
        short(&session.id),
        session.uid
    );
    Ok(ExitCode::SUCCESS)
}

/// `dfs logout`.
pub fn logout(data: &Path, uid: Option<u32>) -> Result<ExitCode> {
    let uid = target_uid(uid)?;
    let out: LoggedOut = api_post(data, "/v1/logout", &Logout { uid })?;
    match out.user {
        Some(user) => println!("logged out {user} (uid {uid})"),
        None => println!("nobody was logged in for uid {uid}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// `dfs whoami`: the user this uid acts as on the running peer, and every session with
/// `--all`.
pub fn whoami(data: &Path, all: bool, json: bool) -> Result<ExitCode> {
    let sessions: Vec<SessionInfo> = api_get(data, "/v1/sessions")?;
    let uid = own_uid();
    let shown: Vec<&SessionInfo> = sessions.iter().filter(|s| all || s.uid == uid).collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&shown)?);
    } else if shown.is_empty() {
        println!("not logged in (uid {uid}): ops are signed by the peer alone; `dfs login NAME`");
    } else {
        for s in shown {
            println!("{} ({}) for uid {}", s.user, short(&s.id), s.uid);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn short(hex: &str) -> &str {
    hex.get(..8).unwrap_or(hex)
}

#[derive(Debug, Subcommand)]
pub enum ProfileCommand {
    /// Change your profile (as the user logged in for your uid): signed by you and
    /// replicated to every volume you are a member of
    Set {
        /// How you want to be called (shown with a short key: names are not unique)
        #[arg(long)]
        name: Option<String>,
        /// A short bio
        #[arg(long)]
        bio: Option<String>,
        /// A preference, KEY=VALUE (repeatable)
        #[arg(long = "pref", value_name = "KEY=VALUE")]
        prefs: Vec<String>,
        /// Remove a preference (repeatable)
        #[arg(long = "unset-pref", value_name = "KEY")]
        unset: Vec<String>,
    },
    /// Show a profile: yours, or a user's by name, display name or key (prefix)
    Show {
        user: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

pub fn profile(data: &Path, command: ProfileCommand) -> Result<ExitCode> {
    match command {
        ProfileCommand::Set {
            name,
            bio,
            prefs,
            unset,
        } => {
            let set_prefs = prefs
                .iter()
                .map(|p| {
                    p.split_once('=')
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .ok_or_else(|| BadInput(format!("--pref {p:?} is not KEY=VALUE")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let change = dfs_node::ProfileChange {
                display_name: name,
                bio,
                set_prefs,
                unset_prefs: unset,
            };
            let view: ProfileView = api_post(data, "/v1/profile", &change)?;
            println!(
                "profile of {} ({}) set",
                view.profile.display_name,
                short(&view.user)
            );
        }
        ProfileCommand::Show { user, json } => {
            let all: Vec<ProfileView> = api_get(data, "/v1/profiles")?;
            let wanted = match user {
                Some(user) => user,
                None => {
                    let sessions: Vec<SessionInfo> = api_get(data, "/v1/sessions")?;
                    let uid = own_uid();
                    sessions
                        .into_iter()
                        .find(|s| s.uid == uid)
                        .map(|s| s.id)
                        .ok_or_else(|| {
                            BadInput(format!(
                                "not logged in (uid {uid}): name a user, or `dfs login NAME`"
                            ))
                        })?
                }
            };
            let local = crate::history::local_user_names(data);
            let matches: Vec<&ProfileView> = all
                .iter()
                .filter(|p| {
                    p.user.starts_with(&wanted.to_lowercase())
                        || p.profile.display_name == wanted
                        || local.get(&p.user) == Some(&wanted)
                })
                .collect();
            let view = match matches.as_slice() {
                [one] => *one,
                [] => return Err(BadInput(format!("no profile of {wanted:?} on this peer")).into()),
                many => {
                    return Err(BadInput(format!(
                        "{wanted:?} names {} users: give more of the key",
                        many.len()
                    ))
                    .into())
                }
            };
            if json {
                println!("{}", serde_json::to_string_pretty(view)?);
            } else {
                println!("user:         {}", view.user);
                println!("display name: {}", view.profile.display_name);
                println!("bio:          {}", view.profile.bio);
                for (k, v) in &view.profile.prefs {
                    println!("pref:         {k} = {v}");
                }
                println!(
                    "updated:      {}",
                    crate::units::utc(view.profile.updated_ms)
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
