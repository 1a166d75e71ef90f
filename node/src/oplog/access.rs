//! Roles in a volume, decided by the volume's own control ops: every member that holds the same
//! ops gives every op the same verdict, whatever order the ops arrived in.
//!
//! Roles rank owner > admin > writer > reader > removed. The creator (the genesis's principal)
//! is the owner for good; a member who joined with a ticket is a writer until a
//! [`Control::SetRole`] says otherwise. Who may decide what is stratified, so no verdict
//! depends on itself:
//!
//! 1. The owner's decisions always stand (except on the owner itself, or naming another owner).
//! 2. An admin's decision stands when the owner's decisions make its author an admin at that op,
//!    it names a role below admin, and its target is not an admin or the owner by the owner's
//!    decisions before it. So admins cannot unmake each other, and nothing an admin does can
//!    change who the admins are.
//! 3. A join stands when the invitation it proves was recorded by an op whose author was then
//!    a writer or above; the first recording of an invitation key counts.
//!
//! **Which decision governs an op** is not a matter of clocks, which an author chooses: a
//! decision carries a *cutoff*, per device of its target, the highest seq of that device the
//! decider held. An op of the target at or below the cutoff was seen by the decider and came
//! before the decision; any other op comes after it, even one that claims an earlier time. An
//! op's role is that of the last decision (in op order) it comes after, else the role it joined
//! with. So a member demoted or removed while offline cannot write its way back by backdating,
//! and a write made concurrently with a removal is rejected on every member alike.
//!
//! Storage stays permissive (every admitted member's ops are kept, so every replica holds the
//! same set); verdicts are applied where ops take effect: the fs state applies only the data
//! ops of writers, and a peer refuses to sign what its members would reject.

use std::collections::BTreeMap;

use super::control::{Attestation, Control, IssuerKeys, NewEpoch, Payload, Role};
use super::op::{AuthorId, OpId, SignedOp};

/// Where an op stands: its id, the peer that signed it (a device), its principal (the user,
/// or the peer where no user signed) and its place in the device's sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpPlace {
    pub id: OpId,
    pub device: AuthorId,
    pub principal: AuthorId,
    pub seq: u64,
}

impl OpPlace {
    pub fn of(op: &SignedOp) -> OpPlace {
        OpPlace {
            id: op.id,
            device: op.id.author,
            principal: op.principal(),
            seq: op.seq,
        }
    }
}

/// Why an op has no effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("its author is not a member")]
    NotMember,
    #[error("its author is a reader")]
    Reader,
    #[error("its author was removed from the volume")]
    Removed,
    #[error("only the owner and admins change roles")]
    NotAdmin,
    #[error("the owner's role cannot be changed, nor another owner made")]
    Owner,
    #[error("an admin can neither change an admin's role nor make one")]
    AboveRank,
    #[error("its invitation was not recorded by a writer")]
    Invitation,
    #[error("its invitation had expired")]
    Expired,
    #[error("its invitation was single-use and used already")]
    Used,
    #[error("its invitation was revoked")]
    Revoked,
    #[error("the volume requires an attestation from its OpenID Connect issuer, and the join has none (log in with `dfs login --oidc ISSUER` first)")]
    Unattested,
    #[error("its attestation does not verify under the keys of the issuer the volume requires")]
    Attestation,
}

/// An invitation recorded by a writer, and what became of it.
#[derive(Debug, Clone)]
struct Invitation {
    by: AuthorId,
    expires_ms: Option<u64>,
    single_use: bool,
    /// The principal whose join used it first.
    used_by: Option<AuthorId>,
    revoked: bool,
}

impl Invitation {
    /// Whether a join at `at` counts, taking the invitation for that principal if so.
    fn admits(&mut self, at: &OpPlace) -> Result<(), Rejection> {
        if self.revoked {
            return Err(Rejection::Revoked);
        }
        if self.expires_ms.is_some_and(|e| at.id.hlc.millis > e) {
            return Err(Rejection::Expired);
        }
        match self.used_by {
            Some(user) if self.single_use && user != at.principal => Err(Rejection::Used),
            _ => {
                self.used_by.get_or_insert(at.principal);
                Ok(())
            }
        }
    }
}

/// A role decision that stands.
#[derive(Debug, Clone)]
struct Decision {
    id: OpId,
    role: Role,
    cutoff: BTreeMap<AuthorId, u64>,
}

impl Decision {
    /// Whether `at` comes after this decision: its decider had not seen it.
    fn precedes(&self, at: &OpPlace) -> bool {
        at.seq > self.cutoff.get(&at.device).copied().unwrap_or(0)
    }
}

/// The roles of one volume's members, from its control ops.
#[derive(Debug, Clone, Default)]
pub struct Access {
    owner: Option<AuthorId>,
    /// Members by a join that stands, with the role they joined with.
    joined: BTreeMap<AuthorId, Role>,
    /// The decisions that stand, per target, in op order.
    decisions: BTreeMap<AuthorId, Vec<Decision>>,
    /// Control ops that stand for nothing, and why.
    void: BTreeMap<OpId, Rejection>,
    /// The key epochs that decisions which stand began, in op order.
    epochs: Vec<NewEpoch>,
    /// Invitations recorded by writers, by invitation key.
    invites: BTreeMap<[u8; 32], Invitation>,
    /// The issuer joins need an attestation from, as the last requirement that stands says.
    required: Option<IssuerKeys>,
}

/// Whether a join at `at` by `principal` meets the issuer requirement `required`: none, or an
/// attestation that verifies under its keys at the join's time.
fn attested(
    required: Option<&IssuerKeys>,
    attestation: Option<&Attestation>,
    principal: &AuthorId,
    at: &OpPlace,
) -> Result<(), Rejection> {
    let Some(keys) = required else {
        return Ok(());
    };
    let attestation = attestation.ok_or(Rejection::Unattested)?;
    crate::crypto::attestation::verify_attestation(
        attestation,
        &principal.0,
        keys,
        at.id.hlc.millis,
    )
    .map(|_| ())
    .map_err(|why| {
        tracing::debug!(%why, "an attestation does not verify");
        Rejection::Attestation
    })
}

/// The role `decisions` give an op at `at` of a member that joined as `joined`.
fn role_by(decisions: Option<&Vec<Decision>>, joined: Role, at: &OpPlace) -> Role {
    decisions
        .into_iter()
        .flatten()
        .rev()
        .find(|d| d.precedes(at))
        .map_or(joined, |d| d.role)
}

impl Access {
    /// The roles that `controls`, a volume's control ops in op order, decide.
    pub fn build(controls: &[(OpPlace, Control)]) -> Access {
        let mut access = Access {
            owner: controls
                .iter()
                .find_map(|(at, c)| matches!(c, Control::Genesis { .. }).then_some(at.principal)),
            ..Access::default()
        };
        let owner = access.owner;
        let role_changes = controls.iter().filter_map(|(at, c)| match c {
            Control::SetRole {
                member,
                role,
                cutoff,
                ..
            } => Some((at, AuthorId(*member), *role, cutoff)),
            _ => None,
        });
        // 1. The owner's decisions.
        let mut by_owner: BTreeMap<AuthorId, Vec<Decision>> = BTreeMap::new();
        for (at, member, role, cutoff) in role_changes.clone() {
            if Some(at.principal) != owner {
                continue;
            }
            if Some(member) == owner || role == Role::Owner {
                access.void.insert(at.id, Rejection::Owner);
                continue;
            }
            by_owner.entry(member).or_default().push(Decision {
                id: at.id,
                role,
                cutoff: cutoff.iter().map(|(d, s)| (AuthorId(*d), *s)).collect(),
            });
        }
        // 2. The admins' decisions, judged by the owner's alone.
        let mut decisions = by_owner.clone();
        for (at, member, role, cutoff) in role_changes {
            if Some(at.principal) == owner {
                continue;
            }
            let decider = role_by(by_owner.get(&at.principal), Role::Writer, at);
            let target_rank = by_owner
                .get(&member)
                .into_iter()
                .flatten()
                .rev()
                .find(|d| d.id < at.id)
                .map_or(Role::Writer, |d| d.role);
            let verdict = if decider < Role::Admin {
                Err(Rejection::NotAdmin)
            } else if Some(member) == owner || role == Role::Owner {
                Err(Rejection::Owner)
            } else if role >= Role::Admin || target_rank >= Role::Admin {
                Err(Rejection::AboveRank)
            } else {
                Ok(())
            };
            match verdict {
                Err(why) => {
                    access.void.insert(at.id, why);
                }
                Ok(()) => {
                    let list = decisions.entry(member).or_default();
                    list.push(Decision {
                        id: at.id,
                        role,
                        cutoff: cutoff.iter().map(|(d, s)| (AuthorId(*d), *s)).collect(),
                    });
                    list.sort_by_key(|d| d.id);
                }
            }
        }
        access.epochs = controls
            .iter()
            .filter_map(|(at, c)| match c {
                Control::SetRole {
                    epoch: Some(epoch), ..
                } if !access.void.contains_key(&at.id) => Some(epoch.clone()),
                _ => None,
            })
            .collect();
        access.decisions = decisions;
        // 3. Invitations, issuer requirements and joins, in op order (an inviter's join
        //    precedes its invitation).
        let mut invites: BTreeMap<[u8; 32], Invitation> = BTreeMap::new();
        let mut required: Option<IssuerKeys> = None;
        for (at, control) in controls {
            if let Some((invite, expires_ms, single_use)) = control.invitation() {
                match access.role_at(at) {
                    Ok(role) if role.writes() => {
                        invites.entry(invite).or_insert(Invitation {
                            by: at.principal,
                            expires_ms,
                            single_use,
                            used_by: None,
                            revoked: false,
                        });
                    }
                    Ok(_) => {
                        access.void.insert(at.id, Rejection::Reader);
                    }
                    Err(why) => {
                        access.void.insert(at.id, why);
                    }
                }
                continue;
            }
            match control {
                Control::Revoke { invite } => {
                    let allowed = access.role_at(at).is_ok_and(|r| r >= Role::Admin)
                        || invites.get(invite).is_some_and(|i| i.by == at.principal);
                    match invites.get_mut(invite) {
                        Some(i) if allowed => i.revoked = true,
                        Some(_) => {
                            access.void.insert(at.id, Rejection::NotAdmin);
                        }
                        None => {
                            access.void.insert(at.id, Rejection::Invitation);
                        }
                    }
                }
                Control::RequireIssuer { keys } => {
                    if access.role_at(at).is_ok_and(|r| r >= Role::Admin) {
                        required = keys.clone();
                    } else {
                        access.void.insert(at.id, Rejection::NotAdmin);
                    }
                }
                join if join.join().is_some() && Some(at.principal) != owner => {
                    let Some((invite, _, attestation)) = join.join() else {
                        continue;
                    };
                    let verdict = attested(required.as_ref(), attestation, &at.principal, at)
                        .and_then(|()| {
                            invites
                                .get_mut(&invite)
                                .map_or(Err(Rejection::Invitation), |i| i.admits(at))
                        });
                    match verdict {
                        Ok(()) => {
                            access.joined.entry(at.principal).or_insert(Role::Writer);
                        }
                        Err(why) => {
                            access.void.insert(at.id, why);
                        }
                    }
                }
                _ => {}
            }
        }
        access.invites = invites;
        access.required = required;
        access
    }

    /// The issuer a join needs an attestation from now, if any.
    pub fn required_issuer(&self) -> Option<&IssuerKeys> {
        self.required.as_ref()
    }

    /// Whether a join by `principal` with invitation `invite`, made now (`now_ms`), would
    /// count: what a member checks before it takes a join from its joiner.
    pub fn may_join(
        &self,
        invite: &[u8; 32],
        principal: &AuthorId,
        attestation: Option<&Attestation>,
        now_ms: u64,
    ) -> Result<(), Rejection> {
        let invitation = self.invites.get(invite).ok_or(Rejection::Invitation)?;
        let mut probe = invitation.clone();
        let at = OpPlace {
            id: OpId {
                hlc: super::Hlc {
                    millis: now_ms,
                    counter: 0,
                },
                author: *principal,
            },
            device: *principal,
            principal: *principal,
            seq: 1,
        };
        attested(self.required.as_ref(), attestation, principal, &at)?;
        probe.admits(&at)
    }

    /// The key epochs begun by decisions that stand, oldest first (in op order): writers
    /// seal under the newest one they hold.
    pub fn epochs(&self) -> &[NewEpoch] {
        &self.epochs
    }

    /// Count `principal` as a writer that joined, on the peer's own say (no op records it).
    pub fn grant(&mut self, principal: AuthorId) {
        if Some(principal) != self.owner {
            self.joined.entry(principal).or_insert(Role::Writer);
        }
    }

    /// The volume's creator, once its genesis is held.
    pub fn owner(&self) -> Option<AuthorId> {
        self.owner
    }

    /// The role of the member whose op stands at `at`; an error for a non-member.
    pub fn role_at(&self, at: &OpPlace) -> Result<Role, Rejection> {
        if Some(at.principal) == self.owner {
            return Ok(Role::Owner);
        }
        let joined = *self.joined.get(&at.principal).ok_or(Rejection::NotMember)?;
        Ok(role_by(self.decisions.get(&at.principal), joined, at))
    }

    /// The role of `principal` now: by the last decision about it.
    pub fn current_role(&self, principal: &AuthorId) -> Option<Role> {
        if Some(*principal) == self.owner {
            return Some(Role::Owner);
        }
        let joined = *self.joined.get(principal)?;
        Some(
            self.decisions
                .get(principal)
                .and_then(|d| d.last())
                .map_or(joined, |d| d.role),
        )
    }

    /// Whether `op` takes effect, and if not, why.
    pub fn verdict(&self, op: &SignedOp) -> Result<(), Rejection> {
        if let Some(why) = self.void.get(&op.id) {
            return Err(*why);
        }
        let at = OpPlace::of(op);
        let needs = match Payload::parse(&op.payload) {
            Ok(Payload::Data(_) | Payload::EpochData { .. })
            | Ok(Payload::Control(Control::Invite { .. } | Control::InviteWith { .. })) => {
                Role::Writer
            }
            Ok(Payload::Control(Control::Profile { .. })) => Role::Reader,
            // Genesis, joins and role changes were judged by `build`.
            Ok(Payload::Control(_)) | Err(_) => return Ok(()),
        };
        match self.role_at(&at)? {
            role if role >= needs => Ok(()),
            Role::Removed => Err(Rejection::Removed),
            _ => Err(Rejection::Reader),
        }
    }

    /// The members and their roles now (removed ones included), owner first.
    pub fn roles(&self) -> Vec<(AuthorId, Role)> {
        let mut out: Vec<(AuthorId, Role)> =
            self.owner.map(|o| (o, Role::Owner)).into_iter().collect();
        for member in self.joined.keys() {
            if let Some(role) = self.current_role(member) {
                out.push((*member, role));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
