//! The built-in accounts' store, each scenario against a SQLite file and a
//! real PostgreSQL server: accounts and their folding, refresh-token rotation
//! (reuse revokes the family; of two concurrent refreshes exactly one wins),
//! single-use invites and recovery codes, TOTP step replay, passkeys, and
//! hostile values stored as data. The `user` and `invite` commands on this
//! store are tested in `accounts_cli.rs`.

use std::time::{Duration, SystemTime};

use portcullis::auth::password::{DEFAULT_QUEUE_TIMEOUT, PasswordHasher, Verified};
use portcullis::store::Store;
use portcullis::store::accounts::{Account, AccountError, NewAccount};
use portcullis::store::sessions::{RevokeReason, Rotation};
use portcullis_policy::password::HashParams;

/// Runs each scenario against a fresh SQLite file and a fresh PostgreSQL
/// database (one throwaway server per test).
macro_rules! against_both_stores {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let dir = tempfile::tempdir().unwrap();
                    let url = format!("sqlite://{}", dir.path().join("accounts.db").display());
                    super::$scenario(&portcullis::store::Store::open(&url).await.unwrap()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let server = crate::common::postgres::Postgres::start().await;
                    super::$scenario(&portcullis::store::Store::open(&server.url).await.unwrap()).await;
                }
            )*
        }
    };
}

against_both_stores!(
    accounts_are_folded_unique_and_managed,
    hostile_values_are_stored_as_data,
    refresh_tokens_rotate_and_reuse_revokes_the_family,
    of_two_concurrent_refreshes_exactly_one_wins,
    invites_are_single_use_and_survive_a_refused_registration,
    recovery_codes_are_single_use,
    totp_steps_are_never_accepted_twice,
    passkeys_belong_to_one_account_and_reset_with_mfa,
    passwords_verify_and_rehash_without_undoing_a_change,
);

fn roles(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";

async fn account(store: &Store, username: &str) -> Account {
    let new = NewAccount { username, email: None, password_hash: Some(HASH), roles: &roles(&["viewer"]) };
    store.create_account(&new, SystemTime::now()).await.unwrap()
}

async fn accounts_are_folded_unique_and_managed(store: &Store) {
    let now = SystemTime::now();
    let new = NewAccount {
        username: "  Alice ",
        email: Some("Alice@Example.COM"),
        password_hash: Some(HASH),
        roles: &roles(&["editor", "viewer", "editor"]),
    };
    let alice = store.create_account(&new, now).await.unwrap();
    assert_eq!((alice.username.as_str(), alice.email.as_deref()), ("alice", Some("alice@example.com")));
    assert_eq!(alice.roles, roles(&["editor", "viewer"]));
    assert_eq!(alice.subject(), format!("account:{}", alice.id));
    assert!(alice.has_password && alice.disabled_at.is_none());

    for login in ["alice", "ALICE", "ａｌｉｃｅ", " alice@EXAMPLE.com "] {
        let found = store.account_for_login(login).await.unwrap().unwrap_or_else(|| panic!("{login:?}"));
        assert_eq!(found.account, alice, "{login:?}");
        assert_eq!(found.password_hash.as_deref(), Some(HASH));
        assert!(!format!("{found:?}").contains(HASH), "Debug shows the hash");
    }
    assert!(store.account_for_login("bob").await.unwrap().is_none());
    assert!(store.account_for_login("bob@example.com").await.unwrap().is_none());

    let again = NewAccount { username: "ALICE", email: None, ..new };
    assert!(matches!(store.create_account(&again, now).await, Err(AccountError::UsernameTaken)));
    let same_email = NewAccount { username: "alice2", email: Some("alice@example.com"), ..new };
    assert!(matches!(store.create_account(&same_email, now).await, Err(AccountError::EmailTaken)));
    let bad_role = NewAccount { username: "carol", roles: &roles(&["a b"]), ..new };
    assert!(matches!(store.create_account(&bad_role, now).await, Err(AccountError::InvalidRole(_))));
    let passkey_only = NewAccount { username: "dave", email: None, password_hash: None, roles: &[] };
    assert!(!store.create_account(&passkey_only, now).await.unwrap().has_password);

    let later = now + Duration::from_secs(10);
    store.set_account_roles(&alice.id, &roles(&["admin"]), later).await.unwrap();
    store.set_account_disabled(&alice.id, true, later).await.unwrap();
    store.set_account_disabled(&alice.id, true, later + Duration::from_secs(5)).await.unwrap();
    let changed = store.account(&alice.id).await.unwrap().unwrap();
    assert_eq!(changed.roles, roles(&["admin"]));
    assert_eq!(changed.disabled_at, Some(changed.updated_at - Duration::from_secs(5)), "keeps the first time");
    store.set_account_disabled(&alice.id, false, later).await.unwrap();
    assert!(store.account(&alice.id).await.unwrap().unwrap().disabled_at.is_none());

    let names: Vec<String> = store.list_accounts().await.unwrap().into_iter().map(|a| a.username).collect();
    assert_eq!(names.len(), 2);
    assert!(names.contains(&"alice".to_owned()) && names.contains(&"dave".to_owned()));

    // Deleting an account deletes what it owns.
    let (session, _) = store.create_session(&alice.id, now + Duration::from_secs(3600), now).await.unwrap();
    store.set_totp_secret(&alice.id, "sealed", now).await.unwrap();
    store.replace_recovery_codes(&alice.id, now).await.unwrap();
    store.delete_account(&alice.id).await.unwrap();
    assert!(store.account(&alice.id).await.unwrap().is_none());
    assert!(store.session(&session.id).await.unwrap().is_none());
    assert!(store.totp(&alice.id).await.unwrap().is_none());
    assert_eq!(store.unused_recovery_codes(&alice.id).await.unwrap(), 0);
    for unknown in [
        store.delete_account(&alice.id).await,
        store.set_account_disabled(&alice.id, true, now).await,
        store.set_password_hash(&alice.id, HASH, now).await,
        store.set_account_roles(&alice.id, &[], now).await,
        store.create_session(&alice.id, now + Duration::from_secs(60), now).await.map(drop),
        store.set_totp_secret(&alice.id, "sealed", now).await,
    ] {
        assert!(matches!(unknown, Err(AccountError::Unknown(_))), "{unknown:?}");
    }
}

async fn hostile_values_are_stored_as_data(store: &Store) {
    let now = SystemTime::now();
    let victim = account(store, "victim").await;
    let hostile = [
        "robert');drop_table_accounts;--",
        "x'or'1'='1",
        "\"or\"\"=\"",
        "%",
        "_",
        "back\\slash",
        "$1",
        "null",
        "🦀𝕏ǅ\u{202e}rtl",
    ];
    for (i, name) in hostile.iter().enumerate() {
        let email = format!("{name}{i}@example.com");
        let new = NewAccount { username: name, email: Some(&email), password_hash: Some(name), roles: &[] };
        let created = store.create_account(&new, now).await.unwrap_or_else(|e| panic!("{name:?}: {e}"));
        let found = store.account_for_login(name).await.unwrap().unwrap();
        assert_eq!(found.account, created, "{name:?}");
        assert_eq!(found.password_hash.as_deref(), Some(*name), "{name:?}");
        assert_eq!(store.account_for_login(&email).await.unwrap().unwrap().account, created);
        // Sealed secrets, passkeys and session reasons are data too.
        store.set_totp_secret(&created.id, &format!("{name}'; DELETE FROM totp_secrets; --"), now).await.unwrap();
        let totp = store.totp(&created.id).await.unwrap().unwrap();
        assert_eq!(totp.sealed_secret, format!("{name}'; DELETE FROM totp_secrets; --"));
        store.add_passkey(&created.id, &format!("cred{i}"), name, &format!("{{\"k\":\"{name}\"}}"), now).await.unwrap();
        assert_eq!(store.passkey(&format!("cred{i}")).await.unwrap().unwrap().name, *name);
    }
    // Wildcards matched nothing but themselves: the victim is untouched.
    assert_eq!(store.account_for_login("%").await.unwrap().unwrap().account.username, "%");
    assert_eq!(store.account(&victim.id).await.unwrap().unwrap(), victim);
    assert_eq!(store.list_accounts().await.unwrap().len(), hostile.len() + 1);

    // Very long values: refused by rule, or stored whole.
    let long_name = "n".repeat(10_000);
    let long_email = format!("{}@example.com", "e".repeat(10_000));
    let long = NewAccount { username: &long_name, email: None, password_hash: None, roles: &[] };
    assert!(matches!(store.create_account(&long, now).await, Err(AccountError::InvalidUsername(_))));
    let long = NewAccount { username: "longmail", email: Some(&long_email), password_hash: None, roles: &[] };
    assert!(matches!(store.create_account(&long, now).await, Err(AccountError::InvalidEmail(_))));
    let max = "m".repeat(64);
    let big_secret = "s'\"".repeat(20_000);
    let new = NewAccount { username: &max, email: None, password_hash: Some(&big_secret), roles: &[] };
    let created = store.create_account(&new, now).await.unwrap();
    assert_eq!(store.account_for_login(&max).await.unwrap().unwrap().password_hash.as_deref(), Some(&*big_secret));
    store.set_totp_secret(&created.id, &big_secret, now).await.unwrap();
    assert_eq!(store.totp(&created.id).await.unwrap().unwrap().sealed_secret, big_secret);
    for bad in ["\u{0}", "a\u{7}b", "a b", "a@b"] {
        let new = NewAccount { username: bad, email: None, password_hash: None, roles: &[] };
        assert!(matches!(store.create_account(&new, now).await, Err(AccountError::InvalidUsername(_))), "{bad:?}");
    }
    assert_eq!(store.list_accounts().await.unwrap().len(), hostile.len() + 2);
    // Tokens and codes that are not ours are unknown, whatever they hold.
    for token in ["", "'", "pcr_' OR '1'='1", &"x".repeat(100_000)] {
        assert_eq!(store.rotate_refresh_token(token, Duration::ZERO, now).await.unwrap(), Rotation::Unknown);
        assert!(!store.use_recovery_code(&victim.id, token, now).await.unwrap());
    }
}

async fn refresh_tokens_rotate_and_reuse_revokes_the_family(store: &Store) {
    let alice = account(store, "alice").await;
    let now = SystemTime::now();
    let end = now + Duration::from_secs(3600);
    let (session, t0) = store.create_session(&alice.id, end, now).await.unwrap();
    assert!(t0.expose().starts_with("pcr_") && t0.expose().len() == 4 + 43, "{t0:?}");
    assert_eq!(format!("{t0:?}"), "Token(***)");
    let (other, other_token) = store.create_session(&alice.id, end, now).await.unwrap();

    let Rotation::Rotated { session: s1, token: t1 } =
        store.rotate_refresh_token(t0.expose(), Duration::ZERO, now).await.unwrap()
    else {
        panic!("the first refresh rotates");
    };
    assert_eq!((s1.id.as_str(), s1.generation, s1.expires_at), (session.id.as_str(), 1, session.expires_at));
    let Rotation::Rotated { token: t2, .. } =
        store.rotate_refresh_token(t1.expose(), Duration::ZERO, now).await.unwrap()
    else {
        panic!("the second refresh rotates");
    };
    assert_ne!(t1, t2);

    // The first token again: reuse. The whole family goes, the other session stays.
    let later = now + Duration::from_secs(5);
    let reused = store.rotate_refresh_token(t0.expose(), Duration::ZERO, later).await.unwrap();
    let Rotation::Reused { session: revoked, revoked_now: true } = reused else { panic!("{reused:?}") };
    assert_eq!(revoked.revoked_reason.as_deref(), Some(RevokeReason::Reuse.as_str()));
    assert!(matches!(
        store.rotate_refresh_token(t2.expose(), Duration::ZERO, later).await.unwrap(),
        Rotation::Revoked { .. }
    ));
    assert!(matches!(
        store.rotate_refresh_token(t1.expose(), Duration::ZERO, later).await.unwrap(),
        Rotation::Reused { revoked_now: false, .. }
    ));
    assert!(store.session(&other.id).await.unwrap().unwrap().revoked_at.is_none());

    // Within the grace period a replaced token is only superseded.
    let (_, g0) = store.create_session(&alice.id, end, now).await.unwrap();
    let Rotation::Rotated { token: g1, .. } =
        store.rotate_refresh_token(g0.expose(), Duration::from_secs(30), now).await.unwrap()
    else {
        panic!("rotates");
    };
    let grace = Duration::from_secs(30);
    assert!(matches!(
        store.rotate_refresh_token(g0.expose(), grace, now + Duration::from_secs(29)).await.unwrap(),
        Rotation::Superseded { .. }
    ));
    let Rotation::Rotated { token: g2, .. } = store.rotate_refresh_token(g1.expose(), grace, now).await.unwrap() else {
        panic!("the family survived");
    };
    assert!(matches!(
        store.rotate_refresh_token(g1.expose(), grace, now + Duration::from_secs(31)).await.unwrap(),
        Rotation::Reused { revoked_now: true, .. }
    ));
    assert!(matches!(store.rotate_refresh_token(g2.expose(), grace, now).await.unwrap(), Rotation::Revoked { .. }));

    // Sessions end at their expiry, however often they were refreshed.
    assert!(matches!(
        store.rotate_refresh_token(other_token.expose(), Duration::ZERO, end).await.unwrap(),
        Rotation::Expired { .. }
    ));
    assert!(matches!(store.create_session(&alice.id, now, now).await, Err(AccountError::InvalidExpiry)));

    // Logout everywhere but here.
    let (here, here_token) = store.create_session(&alice.id, end, now).await.unwrap();
    let (_, there_token) = store.create_session(&alice.id, end, now).await.unwrap();
    let revoked =
        store.revoke_account_sessions(&alice.id, Some(&here.id), RevokeReason::PasswordChange, now).await.unwrap();
    assert_eq!(revoked, 2, "the other session and the expired one");
    assert!(matches!(
        store.rotate_refresh_token(there_token.expose(), Duration::ZERO, now).await.unwrap(),
        Rotation::Revoked { .. }
    ));
    assert!(matches!(
        store.rotate_refresh_token(here_token.expose(), Duration::ZERO, now).await.unwrap(),
        Rotation::Rotated { .. }
    ));
    assert!(store.revoke_session(&here.id, RevokeReason::Logout, now).await.unwrap());
    assert!(!store.revoke_session(&here.id, RevokeReason::Admin, now).await.unwrap());
    let sessions = store.account_sessions(&alice.id).await.unwrap();
    assert_eq!(sessions.len(), 5);
    assert!(sessions.iter().all(|s| s.revoked_at.is_some()), "{sessions:?}");
    assert_eq!(store.revoke_account_sessions(&alice.id, None, RevokeReason::LogoutEverywhere, now).await.unwrap(), 0);

    // Ended sessions are purged with their history; live ones stay.
    let (live, live_token) = store.create_session(&alice.id, end, now).await.unwrap();
    assert_eq!(store.purge_sessions(now).await.unwrap(), 0, "nothing ended before now");
    assert_eq!(store.purge_sessions(now + Duration::from_secs(32)).await.unwrap(), 5, "revoked up to now + 31 s");
    assert!(store.session(&session.id).await.unwrap().is_none());
    assert_eq!(store.rotate_refresh_token(t0.expose(), Duration::ZERO, now).await.unwrap(), Rotation::Unknown);
    assert!(store.session(&live.id).await.unwrap().is_some());
    assert!(matches!(
        store.rotate_refresh_token(live_token.expose(), Duration::ZERO, now).await.unwrap(),
        Rotation::Rotated { .. }
    ));
}

async fn of_two_concurrent_refreshes_exactly_one_wins(store: &Store) {
    let alice = account(store, "alice").await;
    let now = SystemTime::now();
    for grace in [Duration::ZERO, Duration::from_secs(60)] {
        for round in 0..10 {
            let (session, token) = store.create_session(&alice.id, now + Duration::from_secs(3600), now).await.unwrap();
            let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(2));
            let racers: Vec<_> = (0..2)
                .map(|_| {
                    let (store, token, barrier) = (store.clone(), token.expose().to_owned(), barrier.clone());
                    tokio::spawn(async move {
                        barrier.wait().await;
                        store.rotate_refresh_token(&token, grace, now).await.unwrap()
                    })
                })
                .collect();
            let mut outcomes = Vec::new();
            for racer in racers {
                outcomes.push(racer.await.unwrap());
            }
            let winners: Vec<_> = outcomes.iter().filter(|o| matches!(o, Rotation::Rotated { .. })).collect();
            assert_eq!(winners.len(), 1, "grace {grace:?} round {round}: {outcomes:?}");
            let Rotation::Rotated { token: next, .. } = winners[0] else { unreachable!() };
            assert_eq!(store.session(&session.id).await.unwrap().unwrap().generation, 1, "one rotation, not two");
            let after = store.rotate_refresh_token(next.expose(), grace, now).await.unwrap();
            if grace.is_zero() {
                // The loser presented a rotated token: reuse, and the family is gone.
                assert!(outcomes.iter().any(|o| matches!(o, Rotation::Reused { .. })), "{outcomes:?}");
                assert!(matches!(after, Rotation::Revoked { .. }), "{after:?}");
            } else {
                assert!(outcomes.iter().any(|o| matches!(o, Rotation::Superseded { .. })), "{outcomes:?}");
                assert!(matches!(after, Rotation::Rotated { .. }), "{after:?}");
            }
        }
    }
}

async fn invites_are_single_use_and_survive_a_refused_registration(store: &Store) {
    let now = SystemTime::now();
    let week = now + Duration::from_secs(7 * 86_400);
    let (invite, code) = store.create_invite(&roles(&["editor"]), week, now).await.unwrap();
    assert!(code.expose().starts_with("pci_"));
    assert_eq!(invite.roles, roles(&["editor"]));
    account(store, "taken").await;

    // A refused registration does not spend the invite.
    let ignored = roles(&["admin"]);
    let taken = NewAccount { username: "Taken", email: None, password_hash: Some(HASH), roles: &ignored };
    assert!(matches!(store.register_with_invite(code.expose(), &taken, now).await, Err(AccountError::UsernameTaken)));
    let invalid = NewAccount { username: "a b", ..taken };
    assert!(matches!(
        store.register_with_invite(code.expose(), &invalid, now).await,
        Err(AccountError::InvalidUsername(_))
    ));

    let bob = NewAccount { username: "bob", ..taken };
    let registered = store.register_with_invite(code.expose(), &bob, now).await.unwrap();
    assert_eq!(registered.roles, roles(&["editor"]), "the invite's roles, not the request's");
    let carol = NewAccount { username: "carol", ..taken };
    assert!(matches!(store.register_with_invite(code.expose(), &carol, now).await, Err(AccountError::InviteRefused)));
    assert!(store.account_for_login("carol").await.unwrap().is_none());

    let (_, short) = store.create_invite(&[], now + Duration::from_secs(60), now).await.unwrap();
    let late = now + Duration::from_secs(60);
    assert!(matches!(store.register_with_invite(short.expose(), &carol, late).await, Err(AccountError::InviteRefused)));
    for unknown in ["", "pci_", "pci_' OR 1=1 --", &code.expose().to_uppercase()] {
        assert!(matches!(store.register_with_invite(unknown, &carol, now).await, Err(AccountError::InviteRefused)));
    }
    assert!(matches!(store.create_invite(&[], now, now).await, Err(AccountError::InvalidExpiry)));
    assert!(matches!(store.create_invite(&roles(&["x,y"]), week, now).await, Err(AccountError::InvalidRole(_))));

    // Two registrations racing with one invite: one account.
    let (_, raced) = store.create_invite(&[], week, now).await.unwrap();
    let attempts: Vec<_> = ["dan", "eve"]
        .into_iter()
        .map(|name| {
            let (store, code) = (store.clone(), raced.expose().to_owned());
            tokio::spawn(async move {
                let new = NewAccount { username: name, email: None, password_hash: None, roles: &[] };
                store.register_with_invite(&code, &new, now).await.is_ok()
            })
        })
        .collect();
    let mut won = 0;
    for attempt in attempts {
        won += usize::from(attempt.await.unwrap());
    }
    assert_eq!(won, 1);
}

async fn recovery_codes_are_single_use(store: &Store) {
    let alice = account(store, "alice").await;
    let bob = account(store, "bob").await;
    let now = SystemTime::now();
    let codes = store.replace_recovery_codes(&alice.id, now).await.unwrap();
    assert_eq!(codes.len(), 10);
    assert_eq!(store.unused_recovery_codes(&alice.id).await.unwrap(), 10);

    assert!(!store.use_recovery_code(&bob.id, codes[0].expose(), now).await.unwrap(), "another account's code");
    assert!(store.use_recovery_code(&alice.id, codes[0].expose(), now).await.unwrap());
    assert!(!store.use_recovery_code(&alice.id, codes[0].expose(), now).await.unwrap(), "used twice");
    assert!(!store.use_recovery_code(&alice.id, &codes[0].expose().to_lowercase(), now).await.unwrap());
    let loose = codes[1].expose().to_lowercase().replace('-', " ");
    assert!(store.use_recovery_code(&alice.id, &loose, now).await.unwrap(), "case and dashes do not matter");
    assert_eq!(store.unused_recovery_codes(&alice.id).await.unwrap(), 8);

    // Two logins racing with one code: one passes.
    let racers: Vec<_> = (0..2)
        .map(|_| {
            let (store, id, code) = (store.clone(), alice.id.clone(), codes[2].expose().to_owned());
            tokio::spawn(async move { store.use_recovery_code(&id, &code, now).await.unwrap() })
        })
        .collect();
    let mut passed = 0;
    for racer in racers {
        passed += usize::from(racer.await.unwrap());
    }
    assert_eq!(passed, 1);

    let fresh = store.replace_recovery_codes(&alice.id, now).await.unwrap();
    assert!(!store.use_recovery_code(&alice.id, codes[3].expose(), now).await.unwrap(), "old codes are void");
    assert!(store.use_recovery_code(&alice.id, fresh[3].expose(), now).await.unwrap());
    assert!(matches!(store.replace_recovery_codes("nobody", now).await, Err(AccountError::Unknown(_))));
}

async fn totp_steps_are_never_accepted_twice(store: &Store) {
    let alice = account(store, "alice").await;
    let now = SystemTime::now();
    assert!(store.totp(&alice.id).await.unwrap().is_none());
    assert!(!store.accept_totp_step(&alice.id, 1, now).await.unwrap(), "no enrolment");

    store.set_totp_secret(&alice.id, "sealed-1", now).await.unwrap();
    let pending = store.totp(&alice.id).await.unwrap().unwrap();
    assert_eq!((pending.confirmed_at, pending.last_step), (None, None));
    assert!(!format!("{pending:?}").contains("sealed-1"));

    let step = 59_000_000;
    assert!(store.accept_totp_step(&alice.id, step, now).await.unwrap());
    assert!(!store.accept_totp_step(&alice.id, step, now).await.unwrap(), "replay");
    assert!(!store.accept_totp_step(&alice.id, step - 1, now).await.unwrap(), "an earlier step");
    let confirmed = store.totp(&alice.id).await.unwrap().unwrap();
    assert_eq!(confirmed.last_step, Some(step));
    assert!(confirmed.confirmed_at.is_some());
    assert!(store.accept_totp_step(&alice.id, step + 1, now).await.unwrap());
    assert!(!store.accept_totp_step(&alice.id, u64::MAX, now).await.unwrap(), "not a step");

    // Two logins racing with one code: one passes.
    let racers: Vec<_> = (0..2)
        .map(|_| {
            let (store, id) = (store.clone(), alice.id.clone());
            tokio::spawn(async move { store.accept_totp_step(&id, step + 2, now).await.unwrap() })
        })
        .collect();
    let mut passed = 0;
    for racer in racers {
        passed += usize::from(racer.await.unwrap());
    }
    assert_eq!(passed, 1);

    // A new enrolment starts over.
    store.set_totp_secret(&alice.id, "sealed-2", now).await.unwrap();
    let renewed = store.totp(&alice.id).await.unwrap().unwrap();
    assert_eq!((renewed.sealed_secret.as_str(), renewed.confirmed_at, renewed.last_step), ("sealed-2", None, None));
    assert!(store.accept_totp_step(&alice.id, step, now).await.unwrap());
}

async fn passkeys_belong_to_one_account_and_reset_with_mfa(store: &Store) {
    let alice = account(store, "alice").await;
    let bob = account(store, "bob").await;
    let now = SystemTime::now();
    store.add_passkey(&alice.id, "Y3JlZC0x", "laptop", "{\"cred\":1}", now).await.unwrap();
    store.add_passkey(&alice.id, "Y3JlZC0y", "phone", "{\"cred\":2}", now).await.unwrap();
    for owner in [&alice.id, &bob.id] {
        assert!(matches!(
            store.add_passkey(owner, "Y3JlZC0x", "again", "{}", now).await,
            Err(AccountError::PasskeyTaken)
        ));
    }
    assert!(matches!(store.add_passkey("nobody", "Y3JlZC0z", "x", "{}", now).await, Err(AccountError::Unknown(_))));
    assert!(matches!(
        store.add_passkey(&alice.id, "not base64!", "x", "{}", now).await,
        Err(AccountError::InvalidPasskey(_))
    ));

    let found = store.passkey("Y3JlZC0x").await.unwrap().unwrap();
    assert_eq!(
        (found.account_id.as_str(), found.name.as_str(), found.last_used_at),
        (alice.id.as_str(), "laptop", None)
    );
    assert!(store.update_passkey("Y3JlZC0x", "{\"cred\":1,\"counter\":7}", now).await.unwrap());
    let used = store.passkey("Y3JlZC0x").await.unwrap().unwrap();
    assert_eq!(used.passkey, "{\"cred\":1,\"counter\":7}");
    assert!(used.last_used_at.is_some());
    assert!(!store.delete_passkey(&bob.id, "Y3JlZC0x").await.unwrap(), "not bob's");
    assert!(store.delete_passkey(&alice.id, "Y3JlZC0y").await.unwrap());
    assert_eq!(store.passkeys(&alice.id).await.unwrap().len(), 1);

    store.set_totp_secret(&alice.id, "sealed", now).await.unwrap();
    store.replace_recovery_codes(&alice.id, now).await.unwrap();
    store.add_passkey(&bob.id, "Ym9i", "bob's", "{}", now).await.unwrap();
    store.reset_mfa(&alice.id).await.unwrap();
    assert!(store.totp(&alice.id).await.unwrap().is_none());
    assert_eq!(store.unused_recovery_codes(&alice.id).await.unwrap(), 0);
    assert!(store.passkeys(&alice.id).await.unwrap().is_empty());
    assert_eq!(store.passkeys(&bob.id).await.unwrap().len(), 1, "only alice's");
}

async fn passwords_verify_and_rehash_without_undoing_a_change(store: &Store) {
    let hasher = PasswordHasher::new(HashParams::OWASP, 2, DEFAULT_QUEUE_TIMEOUT).await.unwrap();
    let now = SystemTime::now();
    let hash = hasher.hash_new("correct horse battery staple").await.unwrap();
    let new = NewAccount { username: "alice", email: None, password_hash: Some(&hash), roles: &[] };
    store.create_account(&new, now).await.unwrap();

    let record = store.account_for_login("Alice").await.unwrap().unwrap();
    let stored = record.password_hash.as_deref();
    assert_eq!(hasher.verify("correct horse battery staple", stored).await.unwrap(), Verified::Match { rehash: false });
    assert_eq!(hasher.verify("correct horse battery stapler", stored).await.unwrap(), Verified::Mismatch);
    let missing = store.account_for_login("nobody").await.unwrap();
    assert_eq!(
        hasher.verify("correct horse battery staple", missing.and_then(|r| r.password_hash).as_deref()).await.unwrap(),
        Verified::Mismatch
    );

    // A rehash only replaces the hash it was computed from.
    let stronger =
        PasswordHasher::new(HashParams { iterations: 3, ..HashParams::OWASP }, 1, DEFAULT_QUEUE_TIMEOUT).await.unwrap();
    assert_eq!(
        stronger.verify("correct horse battery staple", stored).await.unwrap(),
        Verified::Match { rehash: true }
    );
    let rehashed = stronger.hash_new("correct horse battery staple").await.unwrap();
    let changed = stronger.hash_new("a whole new passphrase").await.unwrap();
    store.set_password_hash(&record.account.id, &changed, now).await.unwrap();
    assert!(
        !store.rehash_password(&record.account.id, &hash, &rehashed).await.unwrap(),
        "the password changed meanwhile"
    );
    let current = store.account_for_login("alice").await.unwrap().unwrap().password_hash;
    assert_eq!(current.as_deref(), Some(changed.as_str()));
    let changed_rehashed = stronger.hash_new("a whole new passphrase").await.unwrap();
    assert!(store.rehash_password(&record.account.id, &changed, &changed_rehashed).await.unwrap());
}
