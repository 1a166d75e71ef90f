use super::*;
use crate::oplog::hlc::Hlc;

const OWNER: AuthorId = AuthorId([1; 32]);
const BOB: AuthorId = AuthorId([2; 32]);
const CAROL: AuthorId = AuthorId([3; 32]);
/// Bob's two devices (peers signing for him).
const BOB_LAPTOP: AuthorId = AuthorId([12; 32]);
const BOB_PHONE: AuthorId = AuthorId([22; 32]);
const OWNER_PEER: AuthorId = AuthorId([11; 32]);
const CAROL_PEER: AuthorId = AuthorId([13; 32]);

fn at(millis: u64, device: AuthorId, principal: AuthorId, seq: u64) -> OpPlace {
    OpPlace {
        id: OpId {
            hlc: Hlc { millis, counter: 0 },
            author: device,
        },
        device,
        principal,
        seq,
    }
}

fn set_role(member: AuthorId, role: Role, cutoff: &[(AuthorId, u64)]) -> Control {
    Control::SetRole {
        member: member.0,
        role,
        cutoff: cutoff.iter().map(|(d, s)| (d.0, *s)).collect(),
        epoch: None,
    }
}

/// Genesis by the owner, an invitation, and Bob and Carol joining with it.
fn founded() -> Vec<(OpPlace, Control)> {
    vec![
        (
            at(1, OWNER_PEER, OWNER, 1),
            Control::Genesis { nonce: [0; 16] },
        ),
        (
            at(2, OWNER_PEER, OWNER, 2),
            Control::Invite { invite: [7; 32] },
        ),
        (
            at(3, BOB_LAPTOP, BOB, 1),
            Control::Join {
                invite: [7; 32],
                proof: Vec::new(),
            },
        ),
        (
            at(4, CAROL_PEER, CAROL, 1),
            Control::Join {
                invite: [7; 32],
                proof: Vec::new(),
            },
        ),
    ]
}

fn build(mut controls: Vec<(OpPlace, Control)>) -> Access {
    controls.sort_by_key(|(at, _)| at.id);
    Access::build(&controls)
}

#[test]
fn joiners_write_until_a_decision_says_otherwise() {
    let access = build(founded());
    assert_eq!(access.owner(), Some(OWNER));
    assert_eq!(access.role_at(&at(9, BOB_LAPTOP, BOB, 5)), Ok(Role::Writer));
    assert_eq!(
        access.role_at(&at(9, OWNER_PEER, OWNER, 5)),
        Ok(Role::Owner)
    );
    assert_eq!(
        access.role_at(&at(9, AuthorId([9; 32]), AuthorId([9; 32]), 1)),
        Err(Rejection::NotMember)
    );
    assert_eq!(
        access.roles(),
        vec![
            (OWNER, Role::Owner),
            (BOB, Role::Writer),
            (CAROL, Role::Writer)
        ]
    );
}

#[test]
fn a_demotion_governs_every_op_its_decider_had_not_seen_whatever_its_clock() {
    let mut controls = founded();
    // The owner, holding Bob's laptop up to seq 5 and nothing of his phone, makes him a reader.
    controls.push((
        at(100, OWNER_PEER, OWNER, 3),
        set_role(BOB, Role::Reader, &[(BOB_LAPTOP, 5)]),
    ));
    let access = build(controls);
    // Seen by the decider: before it, a writer's.
    assert_eq!(
        access.role_at(&at(50, BOB_LAPTOP, BOB, 5)),
        Ok(Role::Writer)
    );
    // Not seen: after it, even with an earlier clock (backdated or concurrent).
    assert_eq!(
        access.role_at(&at(60, BOB_LAPTOP, BOB, 6)),
        Ok(Role::Reader)
    );
    assert_eq!(access.role_at(&at(2, BOB_PHONE, BOB, 1)), Ok(Role::Reader));
    assert_eq!(access.current_role(&BOB), Some(Role::Reader));
    assert_eq!(access.current_role(&CAROL), Some(Role::Writer));
}

#[test]
fn a_removed_member_stays_out_until_it_is_let_back_in() {
    let mut controls = founded();
    controls.push((
        at(100, OWNER_PEER, OWNER, 3),
        set_role(BOB, Role::Removed, &[(BOB_LAPTOP, 1)]),
    ));
    // Bob joins again with the same invitation: still removed.
    controls.push((
        at(200, BOB_LAPTOP, BOB, 2),
        Control::Join {
            invite: [7; 32],
            proof: Vec::new(),
        },
    ));
    let access = build(controls.clone());
    assert_eq!(
        access.role_at(&at(300, BOB_LAPTOP, BOB, 3)),
        Ok(Role::Removed)
    );
    // Let back in as a reader, having seen seq 3: seq 3 stays removed, 4 is a reader's.
    controls.push((
        at(400, OWNER_PEER, OWNER, 4),
        set_role(BOB, Role::Reader, &[(BOB_LAPTOP, 3)]),
    ));
    let access = build(controls);
    assert_eq!(
        access.role_at(&at(300, BOB_LAPTOP, BOB, 3)),
        Ok(Role::Removed)
    );
    assert_eq!(
        access.role_at(&at(500, BOB_LAPTOP, BOB, 4)),
        Ok(Role::Reader)
    );
}

#[test]
fn admins_decide_for_writers_and_readers_only() {
    let mut controls = founded();
    let make_admin = at(10, OWNER_PEER, OWNER, 3);
    controls.push((make_admin, set_role(CAROL, Role::Admin, &[(CAROL_PEER, 1)])));
    // Carol (admin from her seq 2 on) removes Bob: stands.
    let removes_bob = at(20, CAROL_PEER, CAROL, 2);
    controls.push((
        removes_bob,
        set_role(BOB, Role::Removed, &[(BOB_LAPTOP, 1)]),
    ));
    // She tries to remove the owner, and to make Bob an admin: void.
    let removes_owner = at(21, CAROL_PEER, CAROL, 3);
    controls.push((removes_owner, set_role(OWNER, Role::Removed, &[])));
    let promotes = at(22, CAROL_PEER, CAROL, 4);
    controls.push((promotes, set_role(BOB, Role::Admin, &[])));
    // Bob, a writer when he tried it, cannot demote Carol.
    let bob_tries = at(15, BOB_LAPTOP, BOB, 2);
    controls.push((bob_tries, set_role(CAROL, Role::Reader, &[])));
    // The owner cannot be given a role, nor make a second owner.
    let second_owner = at(30, OWNER_PEER, OWNER, 4);
    controls.push((second_owner, set_role(CAROL, Role::Owner, &[])));
    let access = build(controls);
    assert_eq!(access.current_role(&BOB), Some(Role::Removed));
    assert_eq!(access.current_role(&CAROL), Some(Role::Admin));
    assert_eq!(access.current_role(&OWNER), Some(Role::Owner));
    assert_eq!(access.void.get(&removes_owner.id), Some(&Rejection::Owner));
    assert_eq!(access.void.get(&promotes.id), Some(&Rejection::AboveRank));
    assert_eq!(access.void.get(&bob_tries.id), Some(&Rejection::NotAdmin));
    assert_eq!(access.void.get(&second_owner.id), Some(&Rejection::Owner));
    assert!(!access.void.contains_key(&removes_bob.id));
}

#[test]
fn an_admin_cannot_unmake_another_admin() {
    let mut controls = founded();
    controls.push((
        at(10, OWNER_PEER, OWNER, 3),
        set_role(CAROL, Role::Admin, &[(CAROL_PEER, 1)]),
    ));
    controls.push((
        at(11, OWNER_PEER, OWNER, 4),
        set_role(BOB, Role::Admin, &[(BOB_LAPTOP, 1)]),
    ));
    // Each tries to remove the other: neither stands.
    let carol = at(20, CAROL_PEER, CAROL, 2);
    let bob = at(20, BOB_LAPTOP, BOB, 2);
    controls.push((carol, set_role(BOB, Role::Removed, &[(BOB_LAPTOP, 1)])));
    controls.push((bob, set_role(CAROL, Role::Removed, &[(CAROL_PEER, 1)])));
    let access = build(controls);
    assert_eq!(access.current_role(&BOB), Some(Role::Admin));
    assert_eq!(access.current_role(&CAROL), Some(Role::Admin));
    assert_eq!(access.void.get(&carol.id), Some(&Rejection::AboveRank));
}

#[test]
fn a_readers_invitation_lets_nobody_in() {
    let mut controls = founded();
    controls.push((
        at(10, OWNER_PEER, OWNER, 3),
        set_role(BOB, Role::Reader, &[(BOB_LAPTOP, 1)]),
    ));
    let invite = at(20, BOB_LAPTOP, BOB, 2);
    controls.push((invite, Control::Invite { invite: [8; 32] }));
    let stranger = AuthorId([40; 32]);
    let join = at(30, stranger, stranger, 1);
    controls.push((
        join,
        Control::Join {
            invite: [8; 32],
            proof: Vec::new(),
        },
    ));
    let access = build(controls);
    assert_eq!(access.void.get(&invite.id), Some(&Rejection::Reader));
    assert_eq!(access.void.get(&join.id), Some(&Rejection::Invitation));
    assert_eq!(
        access.role_at(&at(40, stranger, stranger, 2)),
        Err(Rejection::NotMember)
    );
}

#[test]
fn concurrent_decisions_resolve_by_op_order_on_every_replica() {
    // The owner makes Carol an admin; then Carol makes Bob a reader while the owner, not having
    // seen that, makes him a writer again: the later op (by clock, then author) wins for what
    // neither saw, the same on every replica since all sort the same ops the same way.
    let mut controls = founded();
    controls.push((
        at(10, OWNER_PEER, OWNER, 3),
        set_role(CAROL, Role::Admin, &[(CAROL_PEER, 1)]),
    ));
    controls.push((
        at(20, CAROL_PEER, CAROL, 2),
        set_role(BOB, Role::Reader, &[(BOB_LAPTOP, 4)]),
    ));
    controls.push((
        at(25, OWNER_PEER, OWNER, 4),
        set_role(BOB, Role::Writer, &[(BOB_LAPTOP, 3)]),
    ));
    let forward = build(controls.clone());
    controls.reverse();
    let backward = build(controls);
    for access in [forward, backward] {
        // Seq 4: seen by Carol's decision, not by the owner's: the owner's (later) governs.
        assert_eq!(access.role_at(&at(9, BOB_LAPTOP, BOB, 4)), Ok(Role::Writer));
        assert_eq!(access.role_at(&at(9, BOB_LAPTOP, BOB, 9)), Ok(Role::Writer));
        assert_eq!(access.current_role(&BOB), Some(Role::Writer));
    }
}

#[test]
fn role_names_round_trip_and_unknown_ones_are_refused() {
    for role in [
        Role::Removed,
        Role::Reader,
        Role::Writer,
        Role::Admin,
        Role::Owner,
    ] {
        assert_eq!(role.name().parse::<Role>(), Ok(role));
    }
    assert!("superuser".parse::<Role>().is_err());
    assert!(Role::Writer.writes() && !Role::Reader.writes());
}

/// Genesis, then an invitation with terms by the owner.
fn invited(expires_ms: u64, single_use: bool) -> Vec<(OpPlace, Control)> {
    vec![
        (
            at(1, OWNER_PEER, OWNER, 1),
            Control::Genesis { nonce: [0; 16] },
        ),
        (
            at(2, OWNER_PEER, OWNER, 2),
            Control::InviteWith {
                invite: [7; 32],
                expires_ms,
                single_use,
            },
        ),
    ]
}

fn join(millis: u64, device: AuthorId, principal: AuthorId, seq: u64) -> (OpPlace, Control) {
    (
        at(millis, device, principal, seq),
        Control::Join {
            invite: [7; 32],
            proof: Vec::new(),
        },
    )
}

#[test]
fn a_join_after_its_invitation_expired_does_not_count() {
    let mut controls = invited(100, false);
    controls.push(join(50, BOB_LAPTOP, BOB, 1));
    controls.push(join(150, CAROL_PEER, CAROL, 1));
    let access = build(controls);
    assert_eq!(access.current_role(&BOB), Some(Role::Writer));
    assert_eq!(access.current_role(&CAROL), None);
    assert_eq!(access.may_join(&[7; 32], &CAROL, None, 99), Ok(()));
    assert_eq!(
        access.may_join(&[7; 32], &CAROL, None, 101),
        Err(Rejection::Expired)
    );
    assert_eq!(
        access.may_join(&[8; 32], &CAROL, None, 1),
        Err(Rejection::Invitation)
    );
}

#[test]
fn a_single_use_invitation_lets_in_the_first_principal_only() {
    let mut controls = invited(u64::MAX, true);
    // Carol's join is later in op order than Bob's, whatever order they arrive in.
    controls.push(join(20, CAROL_PEER, CAROL, 1));
    controls.push(join(10, BOB_LAPTOP, BOB, 1));
    // Bob's second device may use it too: it is still Bob.
    controls.push(join(30, BOB_PHONE, BOB, 1));
    let access = build(controls);
    assert_eq!(access.current_role(&BOB), Some(Role::Writer));
    assert_eq!(access.current_role(&CAROL), None);
    assert_eq!(
        access.may_join(&[7; 32], &CAROL, None, 40),
        Err(Rejection::Used)
    );
    assert_eq!(access.may_join(&[7; 32], &BOB, None, 40), Ok(()));
}

#[test]
fn a_revoked_invitation_admits_nobody_after_the_revocation() {
    let mut controls = invited(u64::MAX, false);
    controls.push(join(10, BOB_LAPTOP, BOB, 1));
    // Bob (a writer, not the inviter) cannot revoke it; the owner can.
    let bobs = at(15, BOB_LAPTOP, BOB, 2);
    controls.push((bobs, Control::Revoke { invite: [7; 32] }));
    controls.push(join(17, CAROL_PEER, CAROL, 1));
    let owners = at(20, OWNER_PEER, OWNER, 3);
    controls.push((owners, Control::Revoke { invite: [7; 32] }));
    let late = AuthorId([40; 32]);
    controls.push(join(30, late, late, 1));
    let access = build(controls);
    assert_eq!(access.void.get(&bobs.id), Some(&Rejection::NotAdmin));
    assert!(!access.void.contains_key(&owners.id));
    assert_eq!(access.current_role(&BOB), Some(Role::Writer));
    assert_eq!(access.current_role(&CAROL), Some(Role::Writer));
    assert_eq!(access.current_role(&late), None);
    assert_eq!(
        access.may_join(&[7; 32], &late, None, 31),
        Err(Rejection::Revoked)
    );
}

/// A requirement by the owner stands and applies to joins after it: one without an
/// attestation or with one that does not verify does not count; a writer's requirement is void.
#[test]
fn an_issuer_requirement_by_the_owner_holds_back_unattested_joins() {
    let keys = IssuerKeys {
        issuer: "http://127.0.0.1:1".into(),
        client_id: "dfs".into(),
        jwks: r#"{"keys":[]}"#.into(),
    };
    let bogus = Attestation {
        id_token: "a.b.c".into(),
        salt: [0; 16],
    };
    let mut controls = founded();
    // Bob (a writer) cannot set one; the owner can.
    controls.push((
        at(5, BOB_LAPTOP, BOB, 2),
        Control::RequireIssuer {
            keys: Some(keys.clone()),
        },
    ));
    let writer_only = build(controls.clone());
    assert_eq!(writer_only.required_issuer(), None);
    controls.push((
        at(6, OWNER_PEER, OWNER, 3),
        Control::RequireIssuer {
            keys: Some(keys.clone()),
        },
    ));
    let late = AuthorId([9; 32]);
    let liar = AuthorId([8; 32]);
    controls.push(join(7, late, late, 1));
    controls.push((
        at(8, liar, liar, 1),
        Control::JoinAttested {
            invite: [7; 32],
            proof: Vec::new(),
            attestation: bogus.clone(),
        },
    ));
    let access = build(controls.clone());
    assert_eq!(access.required_issuer(), Some(&keys));
    // Earlier joins stand; later ones need the issuer's word.
    assert_eq!(access.current_role(&CAROL), Some(Role::Writer));
    assert_eq!(access.current_role(&late), None);
    assert_eq!(access.current_role(&liar), None);
    assert_eq!(
        access.may_join(&[7; 32], &late, None, 9),
        Err(Rejection::Unattested)
    );
    assert_eq!(
        access.may_join(&[7; 32], &liar, Some(&bogus), 9),
        Err(Rejection::Attestation)
    );
    // Lifted: plain joins count again.
    controls.push((
        at(10, OWNER_PEER, OWNER, 4),
        Control::RequireIssuer { keys: None },
    ));
    controls.push(join(11, late, late, 2));
    assert_eq!(build(controls).current_role(&late), Some(Role::Writer));
}
