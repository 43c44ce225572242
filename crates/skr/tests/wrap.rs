//! Key wrapping against independent implementations: Python's
//! `cryptography` both ways (RSA-OAEP with each hash, then RFC 5649), the
//! RFC 5649 vectors, and the confidential sidecar's own test vector.
//!
//! The oracle tests need `python3` with `cryptography`; set
//! `CONFSUM_SKIP_REAL_TOOLS=1` to skip them where it is missing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use confsum_testkit::{Cmd, python_with};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use confsum_skr::{
    Error, KeyMaterial, KeyType, WrapAlgorithm, WrappingPrivateKey, WrappingPublicKey,
    derive_rsa_hsm_key, unwrap_key, wrap_key,
};
use serde_json::{Value, json};

/// `python3` with cryptography, or `None` when it is missing and
/// `CONFSUM_SKIP_REAL_TOOLS=1`.
fn python() -> Option<()> {
    python_with(&["cryptography"], "cryptography").map(drop)
}

fn run_python(script: &str, input: &Value) -> Value {
    let out = Cmd::new("python3")
        .args(["-c", script])
        .stdin(input.to_string())
        .run()
        .success();
    serde_json::from_slice(&out.stdout).unwrap()
}

const PY_COMMON: &str = r#"
import json, os, sys, base64
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa, padding
from cryptography.hazmat.primitives.keywrap import aes_key_wrap_with_padding, aes_key_unwrap_with_padding
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
HASHES = {"CKM_RSA_AES_KEY_WRAP": hashes.SHA1, "RSA_AES_KEY_WRAP_256": hashes.SHA256, "RSA_AES_KEY_WRAP_384": hashes.SHA384}
def oaep(enc):
    h = HASHES[enc]
    return padding.OAEP(mgf=padding.MGF1(algorithm=h()), algorithm=h(), label=None)
def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()
def b64u_int(i):
    return b64u(i.to_bytes((i.bit_length() + 7) // 8, "big"))
"#;

const SIZES: [usize; 3] = [2048, 3072, 4096];

/// Python wraps (with a KEK of each AES size), Rust unwraps.
#[test]
fn python_wraps_rust_unwraps() {
    if python().is_none() {
        return;
    }
    let script = format!(
        "{PY_COMMON}{}",
        r#"
req = json.load(sys.stdin)
target_rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
targets = {
    "oct": os.urandom(32),
    "rsa": target_rsa.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
}
cases = []
for bits in req["sizes"]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    for enc in HASHES:
        for kek_len in (16, 24, 32):
            for name, material in targets.items():
                kek = os.urandom(kek_len)
                ct = key.public_key().encrypt(kek, oaep(enc)) + aes_key_wrap_with_padding(kek, material)
                cases.append({"bits": bits, "pem": pem, "enc": enc, "kek_len": kek_len, "target": name, "ct": ct.hex(), "material": material.hex()})
print(json.dumps(cases))
"#
    );
    let cases = run_python(&script, &json!({"sizes": SIZES}));
    let cases = cases.as_array().unwrap();
    assert_eq!(cases.len(), SIZES.len() * 3 * 3 * 2);
    for case in cases {
        let key = WrappingPrivateKey::from_pem(case["pem"].as_str().unwrap()).unwrap();
        let enc = WrapAlgorithm::from_name(case["enc"].as_str().unwrap()).unwrap();
        let ct = hex::decode(case["ct"].as_str().unwrap()).unwrap();
        let material = hex::decode(case["material"].as_str().unwrap()).unwrap();
        let got = unwrap_key(&key, enc, &ct).unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_eq!(*got, material, "{}", case["target"]);
        if case["target"] == "rsa" {
            // The released form of an RSA key is PKCS#8 that we read too.
            let m = KeyMaterial::from_bytes(KeyType::Rsa, got).unwrap();
            assert_eq!(m.kty(), KeyType::Rsa);
        }
        // Another hash must not unwrap it.
        let other = WrapAlgorithm::ALL.into_iter().find(|a| *a != enc).unwrap();
        assert!(matches!(unwrap_key(&key, other, &ct), Err(Error::Unwrap)));
    }
}

/// Rust wraps, Python unwraps; the RSA target travels as a JWK that
/// Python made, and Python checks the PKCS#8 we release is that key. The
/// HKDF of the sidecar for RSA-HSM keys is compared too.
#[test]
fn rust_wraps_python_unwraps() {
    if python().is_none() {
        return;
    }
    let gen_script = format!(
        "{PY_COMMON}{}",
        r#"
req = json.load(sys.stdin)
out = {"keys": []}
for bits in req["sizes"]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    out["keys"].append({
        "bits": bits,
        "private": key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode(),
        "spki": key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo).hex(),
    })
t = rsa.generate_private_key(public_exponent=65537, key_size=3072)
n = t.private_numbers()
out["target_jwk"] = {"kty": "RSA-HSM", "n": b64u_int(n.public_numbers.n), "e": b64u_int(n.public_numbers.e),
    "d": b64u_int(n.d), "p": b64u_int(n.p), "q": b64u_int(n.q), "dp": b64u_int(n.dmp1), "dq": b64u_int(n.dmq1), "qi": b64u_int(n.iqmp)}
print(json.dumps(out))
"#
    );
    let generated = run_python(&gen_script, &json!({"sizes": SIZES}));
    let target = KeyMaterial::from_jwk(&generated["target_jwk"]).unwrap();
    assert_eq!(target.kty(), KeyType::Rsa);
    let oct = [0x5au8; 32];
    let salt = "92a631483ca875aad7e2477da755d58cac3876b77d10bcdd7b33bfa11e7d8b8e";
    let derived = derive_rsa_hsm_key(target.bytes(), salt, "Model Encryption Key").unwrap();
    let derived_default = derive_rsa_hsm_key(target.bytes(), salt, "").unwrap();

    let mut cases = Vec::new();
    for key in generated["keys"].as_array().unwrap() {
        let public =
            WrappingPublicKey::from_spki_der(&hex::decode(key["spki"].as_str().unwrap()).unwrap())
                .unwrap();
        assert_eq!(public.bits(), key["bits"].as_u64().unwrap() as usize);
        for enc in WrapAlgorithm::ALL {
            for (name, material) in [("oct", &oct[..]), ("rsa", target.bytes())] {
                let ct = wrap_key(&public, enc, material).unwrap();
                // RSA part as long as the modulus, then 8 + padded length.
                let padded = material.len().div_ceil(8) * 8;
                assert_eq!(ct.len(), public.bits() / 8 + 8 + padded);
                cases.push(json!({
                    "private": key["private"], "enc": enc.name(), "target": name,
                    "ct": hex::encode(&ct), "material": hex::encode(material),
                }));
            }
        }
    }
    let check_script = format!(
        "{PY_COMMON}{}",
        r#"
req = json.load(sys.stdin)
jwk = req["jwk"]
def unb64u(s):
    return int.from_bytes(base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)), "big")
results = []
for case in req["cases"]:
    key = serialization.load_pem_private_key(case["private"].encode(), password=None)
    ct = bytes.fromhex(case["ct"])
    k = key.key_size // 8
    kek = key.decrypt(ct[:k], oaep(case["enc"]))
    material = aes_key_unwrap_with_padding(kek, ct[k:])
    ok = material.hex() == case["material"] and len(kek) == 32
    if case["target"] == "rsa":
        released = serialization.load_der_private_key(material, password=None)
        ok = ok and released.private_numbers().d == unb64u(jwk["d"]) and released.private_numbers().public_numbers.n == unb64u(jwk["n"])
    results.append(ok)
d = unb64u(jwk["d"])
ikm = d.to_bytes((d.bit_length() + 7) // 8, "big")
salt = bytes.fromhex(req["salt"])
hk = lambda info: HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm).hex()
print(json.dumps({"results": results, "derived": hk(b"Model Encryption Key"), "derived_default": hk(b"Symmetric Encryption Key")}))
"#
    );
    let out = run_python(
        &check_script,
        &json!({"cases": cases, "jwk": generated["target_jwk"], "salt": salt}),
    );
    let results = out["results"].as_array().unwrap();
    assert_eq!(results.len(), SIZES.len() * 3 * 2);
    assert!(results.iter().all(|r| r == true), "{results:?}");
    assert_eq!(out["derived"], hex::encode(*derived));
    assert_eq!(out["derived_default"], hex::encode(*derived_default));
}

/// The sidecar's own wrapped key and wrapping key
/// (testdata/README.md): unwraps to the bytes its test expects, not with
/// another `enc`, and the runtime JWKS we make of that key is byte for
/// byte the sidecar's.
#[test]
fn sidecar_vector() {
    let vector: Value =
        serde_json::from_str(include_str!("../testdata/sidecar_release_vector.json")).unwrap();
    let key =
        WrappingPrivateKey::from_pem(include_str!("../testdata/sidecar_wrapping_key.pem")).unwrap();
    let ct = URL_SAFE_NO_PAD
        .decode(vector["ciphertext"].as_str().unwrap())
        .unwrap();
    let enc = WrapAlgorithm::from_name(vector["enc"].as_str().unwrap()).unwrap();
    let got = unwrap_key(&key, enc, &ct).unwrap();
    assert_eq!(hex::encode(&*got), vector["expected_hex"].as_str().unwrap());

    // RSAKeyUnwrap_DifferentEnc and RSAKeyUnwrap_InvalidEnc.
    assert!(matches!(
        unwrap_key(&key, WrapAlgorithm::RsaAesKeyWrap256, &ct),
        Err(Error::Unwrap)
    ));
    assert!(matches!(
        WrapAlgorithm::from_name("MY_OWN_WRAP"),
        Err(Error::UnsupportedAlgorithm(_))
    ));
    // RSAKeyUnwrap_DifferentKey.
    let other = WrappingPrivateKey::generate(2048).unwrap();
    assert!(matches!(unwrap_key(&other, enc, &ct), Err(Error::Unwrap)));

    assert_eq!(key.runtime_jwks(), vector["runtime_jwks"].as_str().unwrap());
}

/// RFC 5649 section 6, with the 192-bit KEK arriving through RSA-OAEP as
/// the release format carries it.
#[test]
fn rfc5649_vectors() {
    let kek = hex::decode("5840df6e29b02af1ab493b705bf16ea1ae8338f4dcc176a8").unwrap();
    let private = WrappingPrivateKey::generate(2048).unwrap();
    let public = private.public_key();
    let vectors = [
        (
            "c37b7e6492584340bed12207808941155068f738",
            "138bdeaa9b8fa7fc61f97742e72248ee5ae6ae5360d1ae6a5f54f373fa543b6a",
        ),
        ("466f7250617369", "afbeb0f07dfbf5419200f2ccb50bb24f"),
    ];
    for enc in WrapAlgorithm::ALL {
        let padding = match enc {
            WrapAlgorithm::RsaAesKeyWrap => rsa::Oaep::new::<sha1::Sha1>(),
            WrapAlgorithm::RsaAesKeyWrap256 => rsa::Oaep::new::<sha2::Sha256>(),
            _ => rsa::Oaep::new::<sha2::Sha384>(),
        };
        let rsa_part = public
            .rsa()
            .encrypt(&mut rsa::rand_core::OsRng, padding, &kek)
            .unwrap();
        for (plain, wrapped) in vectors {
            let mut ct = rsa_part.clone();
            ct.extend(hex::decode(wrapped).unwrap());
            let got = unwrap_key(&private, enc, &ct).unwrap();
            assert_eq!(hex::encode(&*got), plain);
            // A flipped bit in the wrapped part fails the integrity check.
            let last = ct.len() - 1;
            ct[last] ^= 1;
            assert!(matches!(unwrap_key(&private, enc, &ct), Err(Error::Unwrap)));
        }
    }
    // The sidecar's "wrong KEK" case.
    let bogus = hex::decode("5840df6e29b02af1ab493b70ddf16ea1ae8338f4dcc176a8").unwrap();
    let mut ct = public
        .rsa()
        .encrypt(
            &mut rsa::rand_core::OsRng,
            rsa::Oaep::new::<sha1::Sha1>(),
            &bogus,
        )
        .unwrap();
    ct.extend(hex::decode(vectors[0].1).unwrap());
    assert!(matches!(
        unwrap_key(&private, WrapAlgorithm::RsaAesKeyWrap, &ct),
        Err(Error::Unwrap)
    ));
}

#[test]
fn bad_inputs_are_errors() {
    let private = WrappingPrivateKey::generate(2048).unwrap();
    for enc in WrapAlgorithm::ALL {
        for len in [0, 1, 255, 256, 257, 264, 300] {
            assert!(matches!(
                unwrap_key(&private, enc, &vec![7u8; len]),
                Err(Error::Unwrap)
            ));
        }
    }
    assert!(wrap_key(&private.public_key(), WrapAlgorithm::RsaAesKeyWrap, &[]).is_err());
    assert!(WrappingPrivateKey::generate(1024).is_err());
    assert!(WrappingPrivateKey::from_pem("not a key").is_err());
    let small = json!({"kty": "RSA", "n": URL_SAFE_NO_PAD.encode([0xc3u8; 128]), "e": "AQAB"});
    assert!(matches!(
        WrappingPublicKey::from_jwk(&small),
        Err(Error::BadKey(_))
    ));
}

#[test]
fn wrapping_key_comes_from_the_runtime_claims() {
    let private = WrappingPrivateKey::generate(2048).unwrap();
    let jwks: Value = serde_json::from_str(&private.runtime_jwks()).unwrap();
    let signing = json!({"kty": "RSA", "key_ops": ["verify"], "kid": "sig",
        "n": jwks["keys"][0]["n"], "e": "AQAB"});
    // The response-signing key comes first and must be skipped.
    let claims = json!({"x-ms-runtime": {"keys": [signing, jwks["keys"][0]]}});
    let public = WrappingPublicKey::from_claims(claims.as_object().unwrap()).unwrap();
    assert_eq!(public.kid(), private.public_key().kid());
    let only_verify = json!({"x-ms-runtime": {"keys": [signing]}});
    assert!(matches!(
        WrappingPublicKey::from_claims(only_verify.as_object().unwrap()),
        Err(Error::BadKey(confsum_skr::KeyProblem::NoWrappingKey))
    ));
    assert!(WrappingPublicKey::from_claims(&serde_json::Map::new()).is_err());
}

#[test]
fn key_material_from_jwks() {
    let k = URL_SAFE_NO_PAD.encode([1u8; 32]);
    let oct = KeyMaterial::from_jwk(&json!({"kty": "oct-HSM", "k": k, "key_size": 256})).unwrap();
    assert_eq!(oct.bytes(), &[1u8; 32]);
    assert!(
        KeyMaterial::from_jwk(&json!({"kty": "oct", "k": URL_SAFE_NO_PAD.encode([1u8; 20])}))
            .is_err()
    );
    assert!(KeyMaterial::from_jwk(&json!({"kty": "OKP", "k": k})).is_err());
    assert!(KeyMaterial::from_jwk(&json!({"kty": "oct"})).is_err());

    // EC: d's public point must be x, y.
    let secret = p256::SecretKey::from_slice(&[9u8; 32]).unwrap();
    let point =
        p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(&secret.public_key(), false);
    let jwk = json!({"kty": "EC-HSM", "crv": "P-256",
        "d": URL_SAFE_NO_PAD.encode([9u8; 32]),
        "x": URL_SAFE_NO_PAD.encode(point.x().unwrap()),
        "y": URL_SAFE_NO_PAD.encode(point.y().unwrap())});
    let ec = KeyMaterial::from_jwk(&jwk).unwrap();
    assert_eq!(ec.kty(), KeyType::Ec);
    let back =
        KeyMaterial::from_bytes(KeyType::Ec, zeroize::Zeroizing::new(ec.bytes().to_vec())).unwrap();
    assert_eq!(back.public_jwk(), ec.public_jwk());
    let mut wrong = jwk.clone();
    wrong["x"] = json!(URL_SAFE_NO_PAD.encode([1u8; 32]));
    assert!(KeyMaterial::from_jwk(&wrong).is_err());
    let mut p521 = jwk;
    p521["crv"] = json!("P-521");
    assert!(KeyMaterial::from_jwk(&p521).is_err());
}
