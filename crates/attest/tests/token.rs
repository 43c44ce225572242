//! Attestation tokens: issue and verify round trips, every way a token must
//! be refused, runtime-key binding, MAA request bodies, and PyJWT as an
//! independent oracle in both directions.
//!
//! The oracle tests need `python3` with `pyjwt` and `cryptography`
//! (`pip install pyjwt cryptography`); without them they fail, unless
//! `CONFSUM_SKIP_REAL_TOOLS=1`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use confsum_attest::{
    AttestRequest, AttestResponse, CertError, Error, Jwk, JwkMember, Jwks, KeyError, MAX_TOKEN_LEN,
    RequestError, RequestField, RuntimeClaims, RuntimeDataError, SnpEvidence, TokenClaims,
    TokenError, TokenIssuer, TokenVerifier, runtime_keys_match,
};
use rsa::RsaPrivateKey;
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::DecodePrivateKey as _;
use rsa::signature::{SignatureEncoding as _, Signer as _};
use sha2::{Digest as _, Sha256};

const ISS: &str = "https://attest.confsum.local";
const LIFETIME: Duration = Duration::from_secs(8 * 3600);
/// A fixed "now" (2024-01-01T00:00:00Z), so the tests never depend on the clock.
const NOW_SECS: u64 = 1_704_067_200;

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW_SECS)
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// One issuer key per test binary: RSA key generation is slow unoptimised.
fn issuer() -> &'static TokenIssuer {
    static ISSUER: std::sync::OnceLock<TokenIssuer> = std::sync::OnceLock::new();
    ISSUER.get_or_init(|| TokenIssuer::generate(ISS).unwrap())
}

fn other_issuer() -> &'static TokenIssuer {
    static ISSUER: std::sync::OnceLock<TokenIssuer> = std::sync::OnceLock::new();
    ISSUER.get_or_init(|| TokenIssuer::generate(ISS).unwrap())
}

/// The TEE's runtime data, as the sidecar serializes its wrapping key.
fn tee_jwks_json() -> Vec<u8> {
    let key = other_issuer().jwk();
    format!(
        r#"{{"keys":[{{"e":"{}","key_ops":["encrypt"],"kid":"wrapping-key","kty":"RSA","n":"{}"}}]}}"#,
        key.e.as_deref().unwrap(),
        key.n.as_deref().unwrap()
    )
    .into_bytes()
}

fn full_claims() -> TokenClaims {
    let runtime = RuntimeClaims::from_json(&tee_jwks_json()).unwrap();
    TokenClaims::builder()
        .host_data([0x11; 32])
        .report_data(runtime.report_data())
        .launch_measurement([0x22; 48])
        .vmpl(0)
        .debuggable(false)
        .runtime(runtime)
        .azure_compliant_uvm(true)
        .nonce("1234")
        .build()
        .unwrap()
}

fn verifier() -> TokenVerifier {
    TokenVerifier::new(issuer().jwks(), ISS)
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn json_part(token: &str, index: usize) -> serde_json::Value {
    let part = token.split('.').nth(index).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

/// Signs `header.payload` RS256 with an issuer's private key, whatever the
/// header says: for tokens our issuer would never make.
fn sign_raw(signer: &TokenIssuer, header: &str, payload: &str) -> String {
    let key = RsaPrivateKey::from_pkcs8_pem(&signer.to_pkcs8_pem().unwrap()).unwrap();
    let input = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
    let signature = SigningKey::<sha2::Sha256>::new(key).sign(input.as_bytes());
    format!("{input}.{}", b64(&signature.to_bytes()))
}

/// HMAC-SHA256 (RFC 2104), for hand-built HS256 tokens.
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

fn valid_payload() -> String {
    let token = issuer().issue(&full_claims(), now(), LIFETIME).unwrap();
    let part = token.split('.').nth(1).unwrap();
    String::from_utf8(URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

#[test]
fn issue_verify_round_trip_with_every_claim() {
    let claims = full_claims();
    let token = issuer().issue(&claims, now(), LIFETIME).unwrap();

    let header = json_part(&token, 0);
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["typ"], "JWT");
    assert_eq!(header["kid"], issuer().kid());
    assert_eq!(header["jku"], format!("{ISS}/certs"));

    let payload = json_part(&token, 1);
    for (name, value) in [
        ("iss", serde_json::json!(ISS)),
        ("iat", serde_json::json!(NOW_SECS)),
        ("nbf", serde_json::json!(NOW_SECS)),
        ("exp", serde_json::json!(NOW_SECS + LIFETIME.as_secs())),
        ("x-ms-attestation-type", serde_json::json!("sevsnpvm")),
        (
            "x-ms-compliance-status",
            serde_json::json!("azure-compliant-uvm"),
        ),
        ("x-ms-sevsnpvm-hostdata", serde_json::json!("11".repeat(32))),
        ("x-ms-sevsnpvm-is-debuggable", serde_json::json!(false)),
        ("x-ms-sevsnpvm-vmpl", serde_json::json!(0)),
        (
            "x-ms-sevsnpvm-reportdata",
            serde_json::json!(hex::encode(claims.report_data)),
        ),
        (
            "x-ms-sevsnpvm-launchmeasurement",
            serde_json::json!("22".repeat(48)),
        ),
        ("nonce", serde_json::json!("1234")),
    ] {
        assert_eq!(payload[name], value, "claim {name}");
    }
    assert_eq!(payload["jti"].as_str().unwrap().len(), 64);
    assert!(payload.get("x-confsum-insecure-emulated").is_none());
    assert_eq!(payload["x-ms-runtime"]["keys"][0]["kid"], "wrapping-key");

    let checked = verifier().verify(&token, now()).unwrap();
    let mut expected = claims.clone();
    expected.iss = ISS.to_owned();
    expected.iat = NOW_SECS;
    expected.nbf = NOW_SECS;
    expected.exp = NOW_SECS + LIFETIME.as_secs();
    expected.jti = checked.jti.clone();
    assert_eq!(checked, expected);
    assert_eq!(
        checked.runtime.as_ref().unwrap().json().as_bytes(),
        tee_jwks_json()
    );
    runtime_keys_match(&checked, &claims.report_data).unwrap();

    // Two tokens for the same claims differ in jti.
    let again = issuer().issue(&claims, now(), LIFETIME).unwrap();
    assert_ne!(verifier().verify(&again, now()).unwrap().jti, checked.jti);
}

#[test]
fn emulated_evidence_is_never_compliant() {
    let conflict = TokenClaims::builder()
        .insecure_emulated(true)
        .azure_compliant_uvm(true)
        .build();
    assert!(
        matches!(conflict, Err(Error::ClaimConflict(_))),
        "{conflict:?}"
    );

    // Set by hand, past the builder: the issuer still refuses.
    let mut claims = full_claims();
    claims.insecure_emulated = true;
    let issued = issuer().issue(&claims, now(), LIFETIME);
    assert!(matches!(issued, Err(Error::ClaimConflict(_))), "{issued:?}");

    // Emulated alone is fine and says so in the token.
    let claims = TokenClaims::builder()
        .insecure_emulated(true)
        .build()
        .unwrap();
    let token = issuer().issue(&claims, now(), LIFETIME).unwrap();
    assert_eq!(json_part(&token, 1)["x-confsum-insecure-emulated"], true);
    assert!(json_part(&token, 1).get("x-ms-compliance-status").is_none());
    assert!(verifier().verify(&token, now()).unwrap().insecure_emulated);

    // A token signed with both (not by our issuer) is refused by the verifier.
    let mut payload: serde_json::Value = serde_json::from_str(&valid_payload()).unwrap();
    payload["x-confsum-insecure-emulated"] = serde_json::json!(true);
    let header = format!(r#"{{"alg":"RS256","kid":"{}"}}"#, issuer().kid());
    let token = sign_raw(issuer(), &header, &payload.to_string());
    let result = verifier().verify(&token, now());
    assert!(matches!(result, Err(Error::ClaimConflict(_))), "{result:?}");
}

#[test]
fn jwks_json_round_trip_and_shape() {
    let jwks = issuer().jwks();
    let json = serde_json::to_string(&jwks).unwrap();
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    let key = &value["keys"][0];
    assert_eq!(key["kty"], "RSA");
    assert_eq!(key["kid"], issuer().kid());
    assert_eq!(key["use"], "sig");
    assert_eq!(key["alg"], "RS256");
    assert_eq!(key["e"], "AQAB");
    assert_eq!(
        URL_SAFE_NO_PAD
            .decode(key["n"].as_str().unwrap())
            .unwrap()
            .len(),
        256
    );

    let parsed = Jwks::from_json(json.as_bytes()).unwrap();
    assert_eq!(parsed, jwks);
    assert_eq!(parsed.find(issuer().kid()), Some(&jwks.keys[0]));
    assert_eq!(parsed.find("nope"), None);

    // MAA's /certs shape (x5c, kid, kty; no n/e) parses and keeps x5c;
    // an x5c that is no certificate is refused as such.
    let maa = br#"{"keys":[{"x5c":["MIIB"],"kid":"dRKh+hBcWUfQ","kty":"RSA"}]}"#;
    let maa = Jwks::from_json(maa).unwrap();
    assert_eq!(maa.keys[0].x5c.as_deref(), Some(&["MIIB".to_owned()][..]));
    assert!(matches!(
        maa.keys[0].rsa_public_key(),
        Err(Error::BadKey(KeyError::Certificate(CertError::Der(_))))
    ));

    for bad in [
        &b"{}"[..],
        b"[]",
        b"{\"keys\":{}}",
        b"{\"keys\":[{}]}",
        b"\xff",
        b"",
    ] {
        assert!(
            matches!(Jwks::from_json(bad), Err(Error::BadKey(KeyError::Json(_)))),
            "{bad:?}"
        );
    }
}

#[test]
fn kid_is_the_rfc7638_thumbprint() {
    // RFC 7638 section 3.1.
    let rfc: Jwk = serde_json::from_str(
        r#"{"kty":"RSA","n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw","e":"AQAB","alg":"RS256","kid":"2011-04-29"}"#,
    )
    .unwrap();
    assert_eq!(
        rfc.thumbprint().unwrap(),
        "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    );
    assert_eq!(
        Jwk::from_rsa(&rfc.rsa_public_key().unwrap()).kid.as_deref(),
        Some("NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs")
    );

    // Our issuer's kid, recomputed here by hand.
    let jwk = issuer().jwk();
    let canonical = format!(
        r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
        jwk.e.as_deref().unwrap(),
        jwk.n.as_deref().unwrap()
    );
    assert_eq!(issuer().kid(), b64(&Sha256::digest(canonical.as_bytes())));
    assert_eq!(jwk.thumbprint().unwrap(), issuer().kid());
}

#[test]
fn pkcs8_pem_round_trip_keeps_the_key() {
    let pem = issuer().to_pkcs8_pem().unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    let again = TokenIssuer::from_pkcs8_pem(ISS, &pem).unwrap();
    assert_eq!(again.kid(), issuer().kid());
    let token = again.issue(&full_claims(), now(), LIFETIME).unwrap();
    verifier().verify(&token, now()).unwrap();

    for bad in [
        "",
        "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n",
    ] {
        let result = TokenIssuer::from_pkcs8_pem(ISS, bad);
        assert!(
            matches!(result, Err(Error::BadKey(KeyError::NotPkcs8))),
            "{result:?}"
        );
    }
    let result = TokenIssuer::from_pkcs8_pem(
        ISS,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    );
    assert!(
        matches!(result, Err(Error::BadKey(KeyError::Rejected))),
        "{result:?}"
    );
}

#[test]
fn time_checks_use_the_given_now_and_leeway() {
    let token = issuer().issue(&full_claims(), now(), LIFETIME).unwrap();
    let exp = NOW_SECS + LIFETIME.as_secs();
    let leeway = 60;
    // (case, now, leeway, accepted)
    let cases: &[(&str, u64, u64, bool)] = &[
        ("at issue", NOW_SECS, leeway, true),
        ("nbf minus leeway", NOW_SECS - leeway, leeway, true),
        (
            "before nbf minus leeway",
            NOW_SECS - leeway - 1,
            leeway,
            false,
        ),
        ("before nbf, no leeway", NOW_SECS - 1, 0, false),
        ("exp plus leeway", exp + leeway, leeway, true),
        ("after exp plus leeway", exp + leeway + 1, leeway, false),
        ("after exp, no leeway", exp + 1, 0, false),
        ("long after", exp + 365 * 86400, leeway, false),
    ];
    for &(case, when, leeway, accepted) in cases {
        let result = verifier()
            .leeway(Duration::from_secs(leeway))
            .verify(&token, at(when));
        match (accepted, &result) {
            (true, Ok(_)) => {}
            (false, Err(Error::Token(TokenError::Expired { exp: e, now: n }))) => {
                assert!(when > NOW_SECS, "{case}");
                assert_eq!((*e, *n), (exp, when), "{case}");
            }
            (false, Err(Error::Token(TokenError::NotYetValid { nbf, now: n }))) => {
                assert!(when < NOW_SECS, "{case}");
                assert_eq!((*nbf, *n), (NOW_SECS, when), "{case}");
            }
            _ => panic!("{case}: {result:?}"),
        }
    }
    // The default leeway is 60 s.
    assert!(verifier().verify(&token, at(exp + 60)).is_ok());
    assert!(verifier().verify(&token, at(exp + 61)).is_err());
}

#[test]
fn refused_tokens() {
    let payload = valid_payload();
    let kid = issuer().kid().to_owned();
    let good = issuer().issue(&full_claims(), now(), LIFETIME).unwrap();
    let [h, p, s]: [&str; 3] = good.split('.').collect::<Vec<_>>().try_into().unwrap();
    let hs256 = |secret: &[u8]| {
        let header = format!(r#"{{"alg":"HS256","kid":"{kid}","typ":"JWT"}}"#);
        let input = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
        let mac = hmac_sha256(secret, input.as_bytes());
        format!("{input}.{}", b64(&mac))
    };
    let jwks_json = serde_json::to_vec(&issuer().jwks()).unwrap();
    let n_bytes = URL_SAFE_NO_PAD
        .decode(issuer().jwk().n.as_deref().unwrap())
        .unwrap();
    let mut flipped = URL_SAFE_NO_PAD.decode(s).unwrap();
    flipped[100] ^= 1;
    let other_payload = payload.replace(&"11".repeat(32), &"33".repeat(32));
    assert_ne!(other_payload, payload);

    type Check = fn(&Error) -> bool;
    let unsupported: Check = |e| matches!(e, Error::Token(TokenError::AlgorithmRefused(_)));
    let malformed: Check = |e| {
        matches!(
            e,
            Error::Token(
                TokenError::NotCompact
                    | TokenError::Base64(_)
                    | TokenError::Header(_)
                    | TokenError::Claims(_)
                    | TokenError::CriticalHeader
            )
        )
    };
    let unknown: Check = |e| matches!(e, Error::Token(TokenError::UnknownKey(_)));
    let bad_sig: Check = |e| matches!(e, Error::Token(TokenError::BadSignature));
    let cases: Vec<(&str, String, Check)> = vec![
        (
            "signed by another key under our kid",
            sign_raw(
                other_issuer(),
                &format!(r#"{{"alg":"RS256","kid":"{kid}"}}"#),
                &payload,
            ),
            bad_sig,
        ),
        (
            "signed by another issuer (its own kid)",
            other_issuer()
                .issue(&full_claims(), now(), LIFETIME)
                .unwrap(),
            unknown,
        ),
        (
            "no kid",
            sign_raw(issuer(), r#"{"alg":"RS256"}"#, &payload),
            unknown,
        ),
        (
            "alg none, empty signature",
            format!("{}.{}.", b64(br#"{"alg":"none"}"#), b64(payload.as_bytes())),
            unsupported,
        ),
        (
            "alg none with our kid and our signature",
            format!(
                "{}.{p}.{s}",
                b64(format!(r#"{{"alg":"none","kid":"{kid}"}}"#).as_bytes())
            ),
            unsupported,
        ),
        (
            "alg None",
            format!(
                "{}.{}.x",
                b64(br#"{"alg":"None"}"#),
                b64(payload.as_bytes())
            ),
            unsupported,
        ),
        (
            "alg rs256 (case)",
            sign_raw(
                issuer(),
                &format!(r#"{{"alg":"rs256","kid":"{kid}"}}"#),
                &payload,
            ),
            unsupported,
        ),
        (
            "alg RS512",
            sign_raw(
                issuer(),
                &format!(r#"{{"alg":"RS512","kid":"{kid}"}}"#),
                &payload,
            ),
            unsupported,
        ),
        (
            "alg PS256",
            sign_raw(
                issuer(),
                &format!(r#"{{"alg":"PS256","kid":"{kid}"}}"#),
                &payload,
            ),
            unsupported,
        ),
        (
            "HS256 keyed with the JWKS JSON",
            hs256(&jwks_json),
            unsupported,
        ),
        ("HS256 keyed with the modulus", hs256(&n_bytes), unsupported),
        (
            "HS256 keyed with the public key PEM-ish text",
            hs256(issuer().jwk().n.as_deref().unwrap().as_bytes()),
            unsupported,
        ),
        (
            "alg not a string",
            sign_raw(issuer(), &format!(r#"{{"alg":1,"kid":"{kid}"}}"#), &payload),
            malformed,
        ),
        (
            "duplicate alg",
            sign_raw(
                issuer(),
                &format!(r#"{{"alg":"RS256","alg":"none","kid":"{kid}"}}"#),
                &payload,
            ),
            malformed,
        ),
        (
            "crit header",
            sign_raw(
                issuer(),
                &format!(r#"{{"alg":"RS256","kid":"{kid}","crit":["exp"]}}"#),
                &payload,
            ),
            malformed,
        ),
        (
            "payload changed after signing",
            format!("{h}.{}.{s}", b64(other_payload.as_bytes())),
            bad_sig,
        ),
        (
            "signature bit flipped",
            format!("{h}.{p}.{}", b64(&flipped)),
            bad_sig,
        ),
        (
            "signature cut short",
            format!("{h}.{p}.{}", b64(&flipped[..252])),
            bad_sig,
        ),
        (
            "signature with a byte appended",
            format!(
                "{h}.{p}.{}",
                b64(&[&URL_SAFE_NO_PAD.decode(s).unwrap()[..], &[0]].concat())
            ),
            bad_sig,
        ),
        ("signature empty", format!("{h}.{p}."), bad_sig),
        ("signature padded", format!("{h}.{p}.{s}="), malformed),
        (
            "signature in standard base64",
            format!("{h}.{p}.{}", s.replace('-', "+").replace('_', "/") + "+/"),
            malformed,
        ),
        ("empty", String::new(), malformed),
        ("one dot", ".".to_owned(), malformed),
        ("two parts", format!("{h}.{p}"), malformed),
        ("four parts", format!("{good}.{s}"), malformed),
        ("three empty parts", "..".to_owned(), malformed),
        (
            "header not JSON",
            format!("{}.{p}.{s}", b64(b"RS256")),
            malformed,
        ),
        ("header not base64url", format!("!!.{p}.{s}"), malformed),
        ("garbage", "eyJ.eyJ.eyJ\u{0}\u{ffff}".to_owned(), malformed),
        (
            "signed payload not JSON",
            sign_raw(
                issuer(),
                &format!(r#"{{"alg":"RS256","kid":"{kid}"}}"#),
                "not json",
            ),
            malformed,
        ),
        (
            "signed payload with a claim of the wrong type",
            sign_raw(
                issuer(),
                &format!(r#"{{"alg":"RS256","kid":"{kid}"}}"#),
                &payload.replace(r#""x-ms-sevsnpvm-vmpl":0"#, r#""x-ms-sevsnpvm-vmpl":"0""#),
            ),
            malformed,
        ),
        (
            "signed payload with short hostdata",
            sign_raw(
                issuer(),
                &format!(r#"{{"alg":"RS256","kid":"{kid}"}}"#),
                &payload.replace(&"11".repeat(32), &"11".repeat(31)),
            ),
            malformed,
        ),
        ("huge", "a".repeat(MAX_TOKEN_LEN + 1), |e| {
            matches!(e, Error::Token(TokenError::TooLarge { .. }))
        }),
    ];
    for (case, token, check) in cases {
        match verifier().verify(&token, now()) {
            Err(err) => assert!(check(&err), "{case}: wrong error {err:?}"),
            Ok(claims) => panic!("{case}: accepted {claims:?}"),
        }
    }

    // The wrong issuer.
    let result = TokenVerifier::new(issuer().jwks(), "https://elsewhere").verify(&good, now());
    assert!(
        matches!(&result, Err(Error::Token(TokenError::WrongIssuer { expected, found }))
            if expected == "https://elsewhere" && found == ISS),
        "{result:?}"
    );

    // Every prefix of a good token is refused without a panic.
    for end in 0..good.len() {
        assert!(
            verifier().verify(&good[..end], now()).is_err(),
            "prefix {end}"
        );
    }
}

#[test]
fn refused_keys() {
    let token = issuer().issue(&full_claims(), now(), LIFETIME).unwrap();
    let with = |edit: fn(&mut Jwk)| {
        let mut jwks = issuer().jwks();
        edit(&mut jwks.keys[0]);
        TokenVerifier::new(jwks, ISS).verify(&token, now())
    };
    type Edit = fn(&mut Jwk);
    type Check = fn(&KeyError) -> bool;
    let cases: [(&str, Edit, Check); 8] = [
        (
            "alg RS512",
            |k| k.alg = Some("RS512".into()),
            |e| matches!(e, KeyError::NotForRs256(alg) if alg == "RS512"),
        ),
        (
            "use enc",
            |k| k.key_use = Some("enc".into()),
            |e| matches!(e, KeyError::NotForSignatures(u) if u == "enc"),
        ),
        (
            "kty EC",
            |k| k.kty = "EC".into(),
            |e| matches!(e, KeyError::NotRsa(kty) if kty == "EC"),
        ),
        (
            "no n",
            |k| k.n = None,
            |e| matches!(e, KeyError::NoPublicKey),
        ),
        (
            "n with a leading zero byte",
            |k| {
                let mut n = URL_SAFE_NO_PAD.decode(k.n.as_deref().unwrap()).unwrap();
                n.insert(0, 0);
                k.n = Some(URL_SAFE_NO_PAD.encode(n));
            },
            |e| matches!(e, KeyError::LeadingZero(JwkMember::N)),
        ),
        (
            "1024-bit n",
            |k| {
                let n = URL_SAFE_NO_PAD.decode(k.n.as_deref().unwrap()).unwrap();
                k.n = Some(URL_SAFE_NO_PAD.encode(&n[..128]));
            },
            |e| matches!(e, KeyError::Size { bits: 1024 }),
        ),
        (
            "padded e",
            |k| k.e = Some("AQAB=".into()),
            |e| matches!(e, KeyError::Base64(JwkMember::E)),
        ),
        (
            "empty e",
            |k| k.e = Some(String::new()),
            |e| matches!(e, KeyError::Empty(JwkMember::E)),
        ),
    ];
    for (case, edit, check) in cases {
        let result = with(edit);
        match &result {
            Err(Error::Token(TokenError::KeyRefused { kid, error })) => {
                assert_eq!(kid, issuer().kid(), "{case}");
                assert!(check(error), "{case}: {error:?}");
            }
            _ => panic!("{case}: {result:?}"),
        }
    }
    // Two keys under one kid: ambiguous, so unknown.
    let mut jwks = issuer().jwks();
    jwks.keys.push(issuer().jwk().clone());
    let result = TokenVerifier::new(jwks, ISS).verify(&token, now());
    assert!(
        matches!(result, Err(Error::Token(TokenError::UnknownKey(_)))),
        "{result:?}"
    );
    // An empty JWKS knows nothing.
    let result = TokenVerifier::new(Jwks::default(), ISS).verify(&token, now());
    assert!(
        matches!(result, Err(Error::Token(TokenError::UnknownKey(_)))),
        "{result:?}"
    );
}

/// The keys of a JWKS shaped like Microsoft Azure Attestation's `/certs`:
/// `x5c`, `kid` and `kty`, no `n` or `e`. Here the certificates are real
/// AMD ones from testdata (an RSA ARK, a P-384 VCEK); the PyJWT test below
/// signs a token under such a key.
#[test]
fn x5c_only_keys() {
    use base64::engine::general_purpose::STANDARD;
    let pem = include_str!("../testdata/uvm_host_amd_certificate.pem");
    let ders: Vec<Vec<u8>> = pem
        .split("-----BEGIN CERTIFICATE-----")
        .skip(1)
        .map(|part| {
            let b64: String = part
                .split("-----END CERTIFICATE-----")
                .next()
                .unwrap()
                .split_whitespace()
                .collect();
            STANDARD.decode(b64).unwrap()
        })
        .collect();
    let (vcek, ark) = (&ders[0], &ders[2]);
    let maa = |der: &[u8]| {
        let json = format!(
            r#"{{"keys":[{{"x5c":["{}"],"kid":"J0pAPdfXXHqWWimgrH853wMIdh5/fLe1z6uSXYPXCa0=","kty":"RSA"}}]}}"#,
            STANDARD.encode(der)
        );
        Jwks::from_json(json.as_bytes()).unwrap().keys.remove(0)
    };

    // The ARK's RSA-4096 key (an RSASSA-PSS SubjectPublicKeyInfo).
    let jwk = maa(ark);
    let key = jwk.rsa_public_key().unwrap();
    let from_ne = Jwk::from_rsa(&key);
    assert_eq!(jwk.thumbprint().unwrap(), from_ne.thumbprint().unwrap());
    // n and e beside x5c must be the same key.
    let mut both = jwk.clone();
    both.n.clone_from(&from_ne.n);
    both.e.clone_from(&from_ne.e);
    assert_eq!(both.rsa_public_key().unwrap(), key);
    let mut disagree = jwk.clone();
    disagree.n.clone_from(&issuer().jwk().n);
    disagree.e.clone_from(&issuer().jwk().e);
    assert!(matches!(
        disagree.rsa_public_key(),
        Err(Error::BadKey(KeyError::X5cMismatch))
    ));

    // The VCEK's key is P-384, not RSA.
    assert!(matches!(
        maa(vcek).rsa_public_key(),
        Err(Error::BadKey(KeyError::Certificate(CertError::NotRsa)))
    ));
    // Not base64, and no certificate at all.
    let mut bad = jwk.clone();
    bad.x5c = Some(vec!["not base64!".into()]);
    assert!(matches!(
        bad.rsa_public_key(),
        Err(Error::BadKey(KeyError::Base64(JwkMember::X5c)))
    ));
    bad.x5c = Some(Vec::new());
    assert!(matches!(
        bad.rsa_public_key(),
        Err(Error::BadKey(KeyError::Empty(JwkMember::X5c)))
    ));
}

#[test]
fn runtime_keys_bind_to_report_data() {
    let claims = full_claims();
    let token = issuer().issue(&claims, now(), LIFETIME).unwrap();
    let checked = verifier().verify(&token, now()).unwrap();
    let expected = {
        let mut rd = [0u8; 64];
        rd[..32].copy_from_slice(&Sha256::digest(tee_jwks_json()));
        rd
    };
    assert_eq!(claims.report_data, expected);
    runtime_keys_match(&checked, &expected).unwrap();

    let mut nonzero_tail = expected;
    nonzero_tail[63] = 1;
    let other_keys = {
        let other = tee_jwks_json();
        let other = String::from_utf8(other)
            .unwrap()
            .replace("wrapping-key", "other-key");
        RuntimeClaims::from_json(other.as_bytes())
            .unwrap()
            .report_data()
    };
    for (case, report_data) in [
        ("other keys", other_keys),
        ("nonzero second half", nonzero_tail),
        ("zeros", [0; 64]),
    ] {
        let result = runtime_keys_match(&checked, &report_data);
        assert!(
            matches!(result, Err(Error::RuntimeKeysMismatch)),
            "{case}: {result:?}"
        );
    }

    // The same keys spelled differently are different bytes: no match.
    let pretty = serde_json::to_vec_pretty(
        &serde_json::from_slice::<serde_json::Value>(&tee_jwks_json()).unwrap(),
    )
    .unwrap();
    let respelled = TokenClaims::builder()
        .runtime(RuntimeClaims::from_json(&pretty).unwrap())
        .build()
        .unwrap();
    let result = runtime_keys_match(&respelled, &expected);
    assert!(
        matches!(result, Err(Error::RuntimeKeysMismatch)),
        "{result:?}"
    );

    // No runtime claim, or runtime data that holds no keys.
    let none = TokenClaims::builder().build().unwrap();
    let result = runtime_keys_match(&none, &expected);
    assert!(
        matches!(
            result,
            Err(Error::BadRuntimeData(RuntimeDataError::Missing))
        ),
        "{result:?}"
    );
    let empty = TokenClaims::builder()
        .runtime(RuntimeClaims::from_json(br#"{"keys":[]}"#).unwrap())
        .build()
        .unwrap();
    let result = runtime_keys_match(&empty, &empty.runtime.as_ref().unwrap().report_data());
    assert!(
        matches!(result, Err(Error::BadRuntimeData(RuntimeDataError::NoKeys))),
        "{result:?}"
    );

    for bad in [
        &b"[]"[..],
        b" [] ",
        b"\"keys\"",
        b"{",
        b"{}}",
        b"\xff",
        b"",
        b"\n",
    ] {
        let result = RuntimeClaims::from_json(bad);
        assert!(
            matches!(result, Err(Error::BadRuntimeData(_))),
            "{bad:?}: {result:?}"
        );
    }

    // Whitespace around the object (the ACI capture's runtime data ends in
    // a newline) is accepted; the token keeps the object, inner spacing
    // included.
    for (input, kept) in [
        (&b" {}"[..], "{}"),
        (b"{}\n", "{}"),
        (
            b"{\n   \"akey\" : \"avalue\"\n}\n",
            "{\n   \"akey\" : \"avalue\"\n}",
        ),
        (b"\r\n\t{\"a\":1}\t\r\n", "{\"a\":1}"),
    ] {
        let runtime = RuntimeClaims::from_json(input).unwrap();
        assert_eq!(runtime.json(), kept, "{input:?}");
        let claims = TokenClaims::builder().runtime(runtime).build().unwrap();
        let token = issuer().issue(&claims, now(), LIFETIME).unwrap();
        let checked = verifier().verify(&token, now()).unwrap();
        assert_eq!(checked.runtime.unwrap().json(), kept, "{input:?}");
    }
}

#[test]
fn maa_request_and_response_bodies() {
    let report = vec![0xa5u8; 1184];
    let chain = b"-----BEGIN CERTIFICATE-----\nVCEK\n-----END CERTIFICATE-----\n".to_vec();
    let cose = vec![0xd2, 0x84, 0x01];
    let evidence = SnpEvidence::new(&report, &chain, std::slice::from_ref(&cose));
    let request = AttestRequest::new(&evidence, &tee_jwks_json(), Some("42".into()));

    let json: serde_json::Value = serde_json::to_value(&request).unwrap();
    let mut members: Vec<_> = json.as_object().unwrap().keys().cloned().collect();
    members.sort();
    assert_eq!(members, ["nonce", "report", "runtimeData"]);
    assert_eq!(json["runtimeData"]["dataType"], "JSON");
    assert_eq!(
        URL_SAFE
            .decode(json["runtimeData"]["data"].as_str().unwrap())
            .unwrap(),
        tee_jwks_json()
    );
    let inner: serde_json::Value =
        serde_json::from_slice(&URL_SAFE.decode(json["report"].as_str().unwrap()).unwrap())
            .unwrap();
    let mut members: Vec<_> = inner.as_object().unwrap().keys().cloned().collect();
    members.sort();
    assert_eq!(members, ["Endorsements", "SnpReport", "VcekCertChain"]);
    let endorsements: serde_json::Value = serde_json::from_slice(
        &URL_SAFE
            .decode(inner["Endorsements"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(endorsements["Uvm"][0], URL_SAFE.encode(&cose));

    let parsed: AttestRequest = serde_json::from_value(json).unwrap();
    assert_eq!(parsed, request);
    let evidence = parsed.evidence().unwrap();
    assert_eq!(evidence.report_bytes().unwrap(), report);
    assert_eq!(evidence.cert_chain_pem().unwrap(), chain);
    assert_eq!(evidence.uvm_endorsements().unwrap(), [cose]);
    assert_eq!(parsed.runtime_data.bytes().unwrap(), tee_jwks_json());

    // The sidecar's body: padded base64url everywhere, a numeric nonce, an
    // empty initTimeData, no Endorsements.
    let inner = format!(
        r#"{{"SnpReport":"{}","VcekCertChain":"{}"}}"#,
        URL_SAFE.encode([1u8, 2]),
        URL_SAFE.encode(b"pem")
    );
    let sidecar = format!(
        r#"{{"report":"{}","runtimeData":{{"data":"{}","dataType":"JSON"}},"initTimeData":{{"data":"","dataType":""}},"nonce":18446744073709551615}}"#,
        URL_SAFE.encode(inner.as_bytes()),
        URL_SAFE.encode(b"{\"keys\":[]}")
    );
    let parsed: AttestRequest = serde_json::from_str(&sidecar).unwrap();
    assert_eq!(parsed.nonce.as_deref(), Some("18446744073709551615"));
    assert_eq!(parsed.runtime_data.bytes().unwrap(), b"{\"keys\":[]}");
    let evidence = parsed.evidence().unwrap();
    assert_eq!(evidence.report_bytes().unwrap(), [1, 2]);
    assert!(evidence.uvm_endorsements().unwrap().is_empty());
    // Unpadded is read too; a missing nonce is no nonce.
    let unpadded = sidecar
        .replace('=', "")
        .replace(r#","nonce":18446744073709551615"#, "");
    let parsed: AttestRequest = serde_json::from_str(&unpadded).unwrap();
    assert_eq!(parsed.evidence().unwrap().report_bytes().unwrap(), [1, 2]);
    assert_eq!(parsed.nonce, None);

    // Bad encodings are errors, not panics.
    for report in [
        "!!!",
        "e30",
        &URL_SAFE.encode(b"[1]"),
        &URL_SAFE.encode(b"\xff"),
    ] {
        let result = SnpEvidence::decode(report);
        assert!(
            matches!(
                result,
                Err(Error::BadRequest(
                    RequestError::Base64(RequestField::Report) | RequestError::Evidence(_)
                ))
            ),
            "{report}: {result:?}"
        );
    }
    let bad = SnpEvidence {
        snp_report: "%".into(),
        vcek_cert_chain: "%".into(),
        endorsements: URL_SAFE.encode(b"{\"Uvm\":[\"%\"]}"),
    };
    assert!(matches!(
        bad.report_bytes(),
        Err(Error::BadRequest(RequestError::Base64(
            RequestField::SnpReport
        )))
    ));
    assert!(matches!(
        bad.cert_chain_pem(),
        Err(Error::BadRequest(RequestError::Base64(
            RequestField::VcekCertChain
        )))
    ));
    assert!(matches!(
        bad.uvm_endorsements(),
        Err(Error::BadRequest(RequestError::Base64(
            RequestField::UvmEndorsement
        )))
    ));

    // The response.
    let response: AttestResponse = serde_json::from_str(r#"{"token":"a.b.c"}"#).unwrap();
    assert_eq!(response.token, "a.b.c");
    assert_eq!(
        serde_json::to_string(&response).unwrap(),
        r#"{"token":"a.b.c"}"#
    );
}

/// `python3` with PyJWT and cryptography, or `None` when it is missing and
/// `CONFSUM_SKIP_REAL_TOOLS=1`.
fn python() -> Option<()> {
    confsum_testkit::python_with(&["jwt", "cryptography"], "pyjwt cryptography").map(drop)
}

fn run_python(script: &str, input: &str) -> String {
    confsum_testkit::Cmd::new("python3")
        .args(["-c", script])
        .stdin(input)
        .run()
        .success()
        .stdout_str()
}

#[test]
fn pyjwt_verifies_our_tokens() {
    if python().is_none() {
        return;
    }
    let token = issuer()
        .issue(&full_claims(), SystemTime::now(), LIFETIME)
        .unwrap();
    let input = serde_json::json!({
        "token": token,
        "jwks": issuer().jwks(),
        "iss": ISS,
    });
    let script = r#"
import json, sys, jwt
i = json.load(sys.stdin)
kid = jwt.get_unverified_header(i["token"])["kid"]
keys = {k["kid"]: jwt.PyJWK(k) for k in i["jwks"]["keys"]}
claims = jwt.decode(i["token"], keys[kid].key, algorithms=["RS256"], issuer=i["iss"],
                    options={"require": ["exp", "nbf", "iat", "iss", "jti"]})
print(json.dumps(claims))
"#;
    let claims: serde_json::Value =
        serde_json::from_str(&run_python(script, &input.to_string())).unwrap();
    assert_eq!(claims["x-ms-attestation-type"], "sevsnpvm");
    assert_eq!(claims["x-ms-sevsnpvm-hostdata"], "11".repeat(32));
    assert_eq!(claims["x-ms-runtime"]["keys"][0]["kid"], "wrapping-key");

    // And PyJWT refuses the same token once a payload byte changed.
    let [h, p, s]: [&str; 3] = token.split('.').collect::<Vec<_>>().try_into().unwrap();
    let mut payload = URL_SAFE_NO_PAD.decode(p).unwrap();
    let at = payload.iter().position(|&b| b == b'1').unwrap();
    payload[at] = b'3';
    let tampered = format!("{h}.{}.{s}", b64(&payload));
    let input = serde_json::json!({"token": tampered, "jwks": issuer().jwks(), "iss": ISS});
    let refuse = r#"
import json, sys, jwt
i = json.load(sys.stdin)
key = jwt.PyJWK(i["jwks"]["keys"][0]).key
try:
    jwt.decode(i["token"], key, algorithms=["RS256"], issuer=i["iss"])
    print("accepted")
except jwt.InvalidSignatureError:
    print("refused")
"#;
    let refused = run_python(refuse, &input.to_string());
    assert_eq!(refused.trim(), "refused");
}

#[test]
fn we_verify_pyjwt_tokens() {
    if python().is_none() {
        return;
    }
    // PyJWT signs with a key that cryptography generated and publishes it as
    // a JWKS; the runtime data is the compact JSON PyJWT itself writes, so
    // its SHA-256 is what the TEE would have put in report_data.
    let script = r#"
import hashlib, json, sys, time, jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
i = json.load(sys.stdin)
key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
jwk.update({"kid": "pyjwt-key", "use": "sig", "alg": "RS256"})
runtime = {"keys": [{"kty": "RSA", "kid": "wrap", "e": "AQAB", "n": jwk["n"]}]}
runtime_json = json.dumps(runtime, separators=(",", ":"))
report_data = hashlib.sha256(runtime_json.encode()).hexdigest() + "00" * 32
now = i["now"]
claims = {
    "iss": i["iss"], "iat": now, "nbf": now, "exp": now + 3600, "jti": "a" * 64,
    "x-ms-attestation-type": "sevsnpvm",
    "x-ms-compliance-status": "azure-compliant-uvm",
    "x-ms-sevsnpvm-hostdata": "ab" * 32,
    "x-ms-sevsnpvm-is-debuggable": False,
    "x-ms-sevsnpvm-vmpl": 0,
    "x-ms-sevsnpvm-reportdata": report_data,
    "x-ms-sevsnpvm-launchmeasurement": "cd" * 48,
    "x-ms-sevsnpvm-guestsvn": 2,
    "x-ms-runtime": runtime,
    "x-ms-ver": "1.0",
}
token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": "pyjwt-key"})
print(json.dumps({"token": token, "jwks": {"keys": [jwk]}, "report_data": report_data}))
"#;
    let input = serde_json::json!({"iss": ISS, "now": NOW_SECS});
    let out: serde_json::Value =
        serde_json::from_str(&run_python(script, &input.to_string())).unwrap();
    let jwks = Jwks::from_json(out["jwks"].to_string().as_bytes()).unwrap();
    let token = out["token"].as_str().unwrap();
    let claims = TokenVerifier::new(jwks.clone(), ISS)
        .verify(token, now())
        .unwrap();
    assert_eq!(claims.host_data, [0xab; 32]);
    assert_eq!(claims.launch_measurement, [0xcd; 48]);
    assert_eq!(
        claims.compliance_status.as_deref(),
        Some("azure-compliant-uvm")
    );
    assert!(!claims.insecure_emulated);
    assert_eq!(claims.exp, NOW_SECS + 3600);
    let mut report_data = [0u8; 64];
    hex::decode_to_slice(out["report_data"].as_str().unwrap(), &mut report_data).unwrap();
    assert_eq!(claims.report_data, report_data);
    runtime_keys_match(&claims, &report_data).unwrap();

    // The same token, an hour and a minute and a second later, is expired.
    let late = TokenVerifier::new(jwks, ISS).verify(token, at(NOW_SECS + 3661));
    assert!(
        matches!(late, Err(Error::Token(TokenError::Expired { .. }))),
        "{late:?}"
    );
}

/// Microsoft Azure Attestation publishes its signing keys at `/certs` only
/// as self-signed certificates: `{"keys":[{"x5c":[…],"kid":…,"kty":"RSA"}]}`
/// with a standard-base64 `kid`. Python's `cryptography` makes such a
/// certificate and PyJWT signs a token under it with MAA's header (`jku`,
/// `kid`, `typ`); we verify it from `x5c` alone.
#[test]
fn we_verify_tokens_under_maa_shaped_x5c_keys() {
    if python().is_none() {
        return;
    }
    let script = r#"
import base64, datetime, hashlib, json, sys, jwt
from cryptography import x509
from cryptography.x509.oid import NameOID
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
i = json.load(sys.stdin)
key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, i["iss"])])
start = datetime.datetime(2023, 1, 1, tzinfo=datetime.timezone.utc)
cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(start + datetime.timedelta(days=3650))
        .sign(key, hashes.SHA256()))
der = cert.public_bytes(serialization.Encoding.DER)
kid = base64.b64encode(hashlib.sha256(der).digest()).decode()
certs = {"keys": [{"x5c": [base64.b64encode(der).decode()], "kid": kid, "kty": "RSA"}]}
now = i["now"]
claims = {"iss": i["iss"], "iat": now, "nbf": now, "exp": now + 3600, "jti": "b" * 64,
          "x-ms-attestation-type": "sevsnpvm", "x-ms-sevsnpvm-hostdata": "ab" * 32,
          "x-ms-sevsnpvm-is-debuggable": False, "x-ms-sevsnpvm-vmpl": 0,
          "x-ms-sevsnpvm-reportdata": "00" * 64,
          "x-ms-sevsnpvm-launchmeasurement": "cd" * 48}
token = jwt.encode(claims, key, algorithm="RS256",
                   headers={"jku": i["iss"] + "/certs", "kid": kid, "typ": "JWT"})
ne = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
print(json.dumps({"token": token, "certs": certs, "n": ne["n"], "e": ne["e"]}))
"#;
    let input = serde_json::json!({"iss": ISS, "now": NOW_SECS});
    let out: serde_json::Value =
        serde_json::from_str(&run_python(script, &input.to_string())).unwrap();
    let certs = Jwks::from_json(out["certs"].to_string().as_bytes()).unwrap();
    assert!(certs.keys[0].n.is_none() && certs.keys[0].e.is_none());
    let token = out["token"].as_str().unwrap();
    let claims = TokenVerifier::new(certs.clone(), ISS)
        .verify(token, now())
        .unwrap();
    assert_eq!(claims.host_data, [0xab; 32]);

    // With n and e beside x5c: accepted when they agree, refused otherwise.
    let mut agree = certs.clone();
    agree.keys[0].n = Some(out["n"].as_str().unwrap().to_owned());
    agree.keys[0].e = Some(out["e"].as_str().unwrap().to_owned());
    TokenVerifier::new(agree, ISS).verify(token, now()).unwrap();
    let mut disagree = certs;
    disagree.keys[0].n.clone_from(&issuer().jwk().n);
    disagree.keys[0].e.clone_from(&issuer().jwk().e);
    let result = TokenVerifier::new(disagree, ISS).verify(token, now());
    assert!(
        matches!(
            result,
            Err(Error::Token(TokenError::KeyRefused {
                error: KeyError::X5cMismatch,
                ..
            }))
        ),
        "{result:?}"
    );
}

/// Writes fuzz seeds for `fuzz/fuzz_targets/jwt.rs` to `$CONFSUM_DUMP_CASES`:
/// one per mode (the first byte picks it, see the target).
#[test]
#[ignore = "writes fuzz seeds; run with CONFSUM_DUMP_CASES=DIR"]
fn dump_fuzz_seeds() {
    let dir = std::path::PathBuf::from(std::env::var("CONFSUM_DUMP_CASES").unwrap());
    std::fs::create_dir_all(&dir).unwrap();
    let token = issuer().issue(&full_claims(), now(), LIFETIME).unwrap();
    let emulated = issuer()
        .issue(
            &TokenClaims::builder()
                .insecure_emulated(true)
                .build()
                .unwrap(),
            now(),
            LIFETIME,
        )
        .unwrap();
    let evidence = SnpEvidence::new(&[0xa5; 1184], b"pem", &[vec![1, 2, 3]]);
    let request = AttestRequest::new(&evidence, &tee_jwks_json(), Some("7".into()));
    let seeds: [(&str, u8, Vec<u8>); 7] = [
        ("token", 0, token.into_bytes()),
        ("token_emulated", 0, emulated.into_bytes()),
        ("claims", 1, valid_payload().into_bytes()),
        ("jwks", 2, serde_json::to_vec(&issuer().jwks()).unwrap()),
        ("tee_jwks", 2, tee_jwks_json()),
        ("request", 3, serde_json::to_vec(&request).unwrap()),
        ("signed_claims", 4, valid_payload().into_bytes()),
    ];
    for (name, mode, body) in seeds {
        let mut bytes = vec![mode];
        bytes.extend_from_slice(&body);
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}
