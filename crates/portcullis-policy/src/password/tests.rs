use super::*;

const SALT: [u8; SALT_BYTES] = [7; SALT_BYTES];

#[test]
fn length_is_counted_in_characters_after_nfc() {
    for (password, want) in [
        ("abcdefghijk".to_owned(), Err(Rejected::TooShort)),
        ("abcdefghijkl".to_owned(), Ok(())),
        // 11 two-byte characters: 22 bytes, still too short.
        ("é".repeat(11), Err(Rejected::TooShort)),
        ("ĳkdé蛇ğ🦀xyzßw".to_owned(), Ok(())),
        // 12 code points written decomposed are 6 characters once composed.
        ("e\u{301}".repeat(6), Err(Rejected::TooShort)),
        ("e\u{301}".repeat(6) + "vwxyzq", Ok(())),
        // 128 four-byte characters (512 bytes) pass; one more does not.
        (emoji(128), Ok(())),
        (emoji(129), Err(Rejected::TooLong)),
        ("abcd efgh ijklmno".repeat(8), Err(Rejected::TooLong)),
    ] {
        assert_eq!(check(&password).map(drop), want, "{password:?}");
    }
}

/// `n` distinct four-byte characters (no repeated unit).
fn emoji(n: u32) -> String {
    (0..n).filter_map(|i| char::from_u32(0x1F600 + i)).collect()
}

#[test]
fn both_spellings_of_a_character_are_one_password() {
    let composed = "caf\u{e9} au lait, merci";
    let decomposed = "cafe\u{301} au lait, merci";
    assert_ne!(composed, decomposed);
    assert_eq!(check(decomposed).as_deref(), Ok(composed));
    let stored = hash(&check(composed).unwrap(), &SALT, &HashParams::OWASP).unwrap();
    assert!(verify(&normalize(decomposed), &stored).unwrap());
    // NFC leaves compatibility characters alone: the ligature is not "fi".
    assert_ne!(normalize("\u{fb01}sh and chips"), "fish and chips");
}

#[test]
fn common_passwords_and_simple_variations_are_refused() {
    for common in [
        "justinbieber",
        "JustinBieber",
        "qwerty123456",
        "password123456",
        "Password1234!",
        "!!dragon2024!!",
        "monkey 2024 2025",
        "qwertyqwerty",
        "abcabcabcabc",
        "zzzzzzzzzzzz",
        "123456789012",
        "2024-12-05 17:30",
    ] {
        assert_eq!(check(common), Err(Rejected::Common), "{common:?}");
        assert_eq!(Rejected::Common.code(), "password.common");
    }
    for fine in ["correct horse battery staple", "pass word 1234", "dragon-fly-meadow", "Tr0ub4dor&3 xkcd"] {
        assert_eq!(check(fine).as_deref(), Ok(fine), "{fine:?}");
    }
}

#[test]
fn the_bundled_list_is_loaded() {
    // A truncated or empty file would make the policy accept everything.
    assert!(COMMON.len() > 19_000, "{}", COMMON.len());
    assert!(COMMON.contains("password") && COMMON.contains("123456"));
}

#[test]
fn hashes_verify_only_their_password() {
    let stored = hash("correct horse battery staple", &SALT, &HashParams::OWASP).unwrap();
    assert!(stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{stored}");
    assert!(verify("correct horse battery staple", &stored).unwrap());
    assert!(!verify("correct horse battery stapl", &stored).unwrap());
    assert!(!verify("", &stored).unwrap());
    let other_salt = hash("correct horse battery staple", &[8; SALT_BYTES], &HashParams::OWASP).unwrap();
    assert_ne!(stored, other_salt);
}

#[test]
fn foreign_or_broken_hashes_are_errors_not_mismatches() {
    let argon2i = Argon2::new(Algorithm::Argon2i, Version::V0x13, Params::default())
        .hash_password(b"x", &SaltString::encode_b64(&SALT).unwrap())
        .unwrap()
        .to_string();
    for stored in ["", "not a hash", "$2b$12$abcdefghijklmnopqrstuuvwxyz0123456789ABCDEFGHIJKLMNOPQ", &argon2i] {
        assert!(matches!(verify("x", stored), Err(HashError::Corrupt(_))), "{stored:?}");
    }
}

#[test]
fn weak_parameters_are_refused() {
    for weak in [
        HashParams { memory_kib: 19 * 1024 - 1, ..HashParams::OWASP },
        HashParams { iterations: 1, ..HashParams::OWASP },
        HashParams { parallelism: 0, ..HashParams::OWASP },
    ] {
        assert!(matches!(hash("x", &SALT, &weak), Err(HashError::Params(_))), "{weak:?}");
    }
    let stronger = HashParams { memory_kib: 32 * 1024, iterations: 3, parallelism: 2 };
    let stored = hash("correct horse battery staple", &SALT, &stronger).unwrap();
    assert!(stored.starts_with("$argon2id$v=19$m=32768,t=3,p=2$"), "{stored}");
    assert!(verify("correct horse battery staple", &stored).unwrap());
}

#[test]
fn a_hash_with_other_parameters_needs_rehashing() {
    let current = HashParams::OWASP;
    let stored = hash("correct horse battery staple", &SALT, &current).unwrap();
    assert!(!needs_rehash(&stored, &current));
    for changed in [
        HashParams { memory_kib: 64 * 1024, ..current },
        HashParams { iterations: 3, ..current },
        HashParams { parallelism: 2, ..current },
    ] {
        assert!(needs_rehash(&stored, &changed), "{changed:?}");
        let again = hash("correct horse battery staple", &SALT, &changed).unwrap();
        assert!(!needs_rehash(&again, &changed), "{changed:?}");
    }
    let argon2i = stored.replacen("$argon2id$", "$argon2i$", 1);
    let old_version = stored.replacen("$v=19$", "$v=16$", 1);
    for stale in [argon2i.as_str(), old_version.as_str(), "garbage", ""] {
        assert!(needs_rehash(stale, &current), "{stale:?}");
    }
}
