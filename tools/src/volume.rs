//! `dfs volume create|list|invite|revoke|join|log|members|role|remove`: shared volumes, through the API of the peer
//! running on the data directory (it owns the op logs and dials the members). `log` describes
//! each op with [`crate::history`], as `dfs log PATH` does.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;
use dfs_node::volume::{LogEntry, MemberInfo, VolumeInfo};
use dfs_node::{CreateVolume, Invitation, InviteVolume, JoinVolume};
use serde::Serialize;

use crate::api_client::{api_get, api_post};

#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// Create a shared volume with you (the user logged in for your uid, or else this peer) as
    /// its first member
    Create {
        /// A local name: letters, digits, '-', '_' or '.'
        name: String,
    },
    /// List the volumes this peer is a member of (or joining)
    List {
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Print a join ticket for a volume
    #[command(
        long_about = "Print a join ticket for volume NAME. Whoever holds the ticket can read \
the volume (it carries the volume's secret) and become a member (it carries an invitation key): \
hand it over as you would a password. It also carries this peer's addresses, which the joiner \
dials."
    )]
    Invite {
        /// The volume's local name
        name: String,
        /// How long the ticket can be used to join: e.g. 1h, 7d, or `never` (no expiry)
        #[arg(long, default_value = "24h", value_parser = parse_expiry)]
        expires: Expiry,
        /// Only one member (user, or peer) may join with the ticket
        #[arg(long)]
        single_use: bool,
    },
    /// Withdraw a ticket from `dfs volume invite`: joins with it from now on do not count
    Revoke {
        /// The volume's local name
        name: String,
        /// The dfs-ticket-... to withdraw
        ticket: String,
    },
    /// Admit only users an OpenID Connect issuer vouches for (`dfs login --oidc`): joins from
    /// now on must carry the issuer's attestation (owner and admins only)
    RequireIssuer {
        /// The volume's local name
        name: String,
        /// The issuer's URL; its keys are fetched now and recorded in the volume
        #[arg(required_unless_present = "none")]
        issuer: Option<String>,
        /// The client id dfs is registered under at the issuer
        #[arg(long, default_value = "dfs")]
        client_id: String,
        /// Lift the requirement
        #[arg(long, conflicts_with = "issuer")]
        none: bool,
    },
    /// Show the signed history of a volume: who changed it, when, and how
    Log {
        /// The volume's local name
        name: String,
        /// How many of the newest ops to show
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// List the members of a volume: users (or peers), their display names and devices
    Members {
        /// The volume's local name
        name: String,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Change a member's role: admin, writer, reader or removed (owner and admins only)
    #[command(
        long_about = "Change the role of MEMBER (a display name, or at least 8 hex digits of the key, as `dfs volume members` shows) in volume NAME. Readers' mounts are read-only and their changes are rejected by every member; a removed member's changes are rejected and it may no longer pull the volume. Every op of the member this peer holds stays; any other op of theirs is judged by the new role, whatever time it claims. The owner decides every role but its own; an admin decides for writers and readers only."
    )]
    Role {
        /// The volume's local name
        name: String,
        /// The member: display name or key (8+ hex digits)
        member: String,
        /// admin, writer, reader or removed
        role: dfs_node::ops::Role,
    },
    /// Remove a member: `dfs volume role NAME MEMBER removed`
    Remove {
        /// The volume's local name
        name: String,
        /// The member: display name or key (8+ hex digits)
        member: String,
    },
    /// Join a volume with a ticket from `dfs volume invite`
    Join {
        /// The dfs-ticket-... printed by `dfs volume invite`
        ticket: String,
        /// A local name for the volume [default: the inviter's name for it]
        #[arg(long)]
        name: Option<String>,
    },
}

pub fn run(data: &Path, command: VolumeCommand) -> Result<ExitCode> {
    match command {
        VolumeCommand::Create { name } => {
            let v: VolumeInfo = api_post(data, "/v1/volumes", &CreateVolume { name })?;
            println!("created volume {} ({})", v.name, v.id);
        }
        VolumeCommand::List { json } => {
            let list: Vec<VolumeInfo> = api_get(data, "/v1/volumes")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if list.is_empty() {
                println!("no volumes yet (create one with `dfs volume create NAME`)");
            } else {
                println!(
                    "{:<20} {:<34} {:>7} {:>8}  {:<8} OWNER",
                    "NAME", "ID", "MEMBERS", "OPS", "STATE"
                );
                for v in list {
                    let state = if v.joined { "member" } else { "joining" };
                    let owner = v
                        .owner
                        .as_ref()
                        .map_or_else(|| "-".to_string(), MemberInfo::label);
                    println!(
                        "{:<20} {:<34} {:>7} {:>8}  {state:<8} {owner}",
                        v.name, v.id, v.members, v.ops
                    );
                }
            }
        }
        VolumeCommand::Invite {
            name,
            expires,
            single_use,
        } => {
            let route = format!("/v1/volumes/{name}/invite");
            let body = InviteVolume {
                expires_secs: expires.0.map_or(0, |d| d.as_secs().max(1)),
                single_use,
            };
            let invitation: Invitation = api_post(data, &route, &body)?;
            println!("{}", invitation.ticket);
        }
        VolumeCommand::Revoke { name, ticket } => {
            let route = format!("/v1/volumes/{name}/revoke");
            let _: serde_json::Value = api_post(data, &route, &JoinVolume { ticket, name: None })?;
            println!("revoked: joins with that ticket no longer count in volume {name}");
        }
        VolumeCommand::RequireIssuer {
            name,
            issuer,
            client_id,
            none: _,
        } => {
            let route = format!("/v1/volumes/{name}/require-issuer");
            let body = dfs_node::RequireIssuer {
                issuer: issuer.clone(),
                client_id,
            };
            let _: serde_json::Value = api_post(data, &route, &body)?;
            match issuer {
                Some(issuer) => println!(
                    "volume {name} admits only users {issuer} vouches for (`dfs login --oidc {issuer}`)"
                ),
                None => println!("volume {name} admits users without an issuer's attestation"),
            }
        }
        VolumeCommand::Log { name, limit, json } => {
            let route = format!("/v1/volumes/{name}/log?limit={limit}");
            let entries: Vec<LogEntry> = api_get(data, &route)?;
            let lines = crate::history::describe_all(&entries);
            if json {
                let rows: Vec<LogRow> = entries
                    .iter()
                    .zip(&lines)
                    .map(|(entry, line)| LogRow {
                        entry,
                        time: &line.time,
                        op: &line.op,
                        detail: &line.detail,
                        version: &line.version,
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                crate::history::print_lines(&lines, &crate::history::local_user_names(data));
            }
        }
        VolumeCommand::Members { name, json } => {
            let members: Vec<MemberInfo> = api_get(data, &format!("/v1/volumes/{name}/members"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&members)?);
            } else {
                println!("{:<40} {:<8} DEVICES", "MEMBER", "ROLE");
                for m in &members {
                    let devices: Vec<&str> =
                        m.devices.iter().map(|d| d.get(..8).unwrap_or(d)).collect();
                    let role = m.role.map_or("-", |r| r.name());
                    let label = if m.you {
                        format!("{} (you)", m.label())
                    } else {
                        m.label()
                    };
                    println!("{label:<40} {role:<8} {}", devices.join(" "));
                }
            }
        }
        VolumeCommand::Role { name, member, role } => set_role(data, &name, member, role)?,
        VolumeCommand::Remove { name, member } => {
            set_role(data, &name, member, dfs_node::ops::Role::Removed)?
        }
        VolumeCommand::Join { ticket, name } => {
            let v: VolumeInfo = api_post(data, "/v1/volumes/join", &JoinVolume { ticket, name })?;
            println!(
                "joining volume {} ({}): a member takes the join when this peer reaches it",
                v.name, v.id
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// How long a ticket may be used: `None` for good.
#[derive(Debug, Clone, Copy)]
pub struct Expiry(Option<std::time::Duration>);

/// `--expires`: a duration (`90m`, `24h`, `7d`), or `never`.
fn parse_expiry(text: &str) -> Result<Expiry, String> {
    if text == "never" {
        return Ok(Expiry(None));
    }
    humantime::parse_duration(text)
        .map(|d| Expiry(Some(d)))
        .map_err(|e| format!("{e} (give a duration such as 90m, 24h or 7d, or `never`)"))
}

fn set_role(data: &Path, name: &str, member: String, role: dfs_node::ops::Role) -> Result<()> {
    let route = format!("/v1/volumes/{name}/role");
    let m: MemberInfo = api_post(data, &route, &dfs_node::SetRole { member, role })?;
    println!(
        "{} is now {} in volume {name}",
        m.label(),
        m.role.map_or("?", |r| r.name())
    );
    Ok(())
}

/// One op of `dfs volume log --json`: the API's entry and the op in words.
#[derive(Serialize)]
struct LogRow<'a> {
    #[serde(flatten)]
    entry: &'a LogEntry,
    time: &'a str,
    op: &'a str,
    detail: &'a str,
    version: &'a str,
}
