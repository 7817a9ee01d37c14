use std::os::unix::fs::PermissionsExt;

use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::pem::parse_x509_pem;
use x509_parser::prelude::*;

use super::*;

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn pem_der(path: &Path) -> Vec<u8> {
    let text = std::fs::read(path).unwrap();
    let (_, pem) = parse_x509_pem(&text).unwrap();
    assert_eq!(pem.label, "CERTIFICATE");
    pem.contents
}

fn common_name(name: &X509Name<'_>) -> String {
    name.iter_common_name()
        .next()
        .unwrap()
        .as_str()
        .unwrap()
        .to_string()
}

fn san_dns_names(cert: &X509Certificate<'_>) -> Vec<String> {
    let mut out = Vec::new();
    for ext in cert.extensions() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext.parsed_extension() {
            for n in &san.general_names {
                match n {
                    GeneralName::DNSName(d) => out.push(d.to_string()),
                    other => panic!("unexpected SAN {other:?}"),
                }
            }
        }
    }
    out
}

/// Checks what TLS peers rely on: the chain to the CA, the names, the usages, the validity.
fn assert_node_cert(dir: &Path, name: &str) {
    let ca_der = pem_der(&dir.join("ca.pem"));
    let (_, ca) = X509Certificate::from_der(&ca_der).unwrap();
    let der = pem_der(&dir.join(format!("{name}.pem")));
    let (_, cert) = X509Certificate::from_der(&der).unwrap();

    cert.verify_signature(Some(ca.public_key()))
        .expect("signed by the CA");
    assert_eq!(cert.issuer(), ca.subject());
    assert_eq!(common_name(cert.subject()), name);
    assert_eq!(san_dns_names(&cert), vec![name.to_string()]);
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);
    assert!(!cert.is_ca());
    let aki = cert
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(a) => a.key_identifier.clone(),
            _ => None,
        })
        .expect("authority key identifier");
    let ski = ca
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => Some(k.clone()),
            _ => None,
        })
        .expect("CA subject key identifier");
    assert_eq!(aki.0, ski.0);

    let now = ASN1Time::now().timestamp();
    let v = cert.validity();
    assert!(v.not_before.timestamp() <= now - 86_000 && v.not_before.timestamp() >= now - 87_000);
    let years = (v.not_after.timestamp() - now) as f64 / (365.25 * 86_400.0);
    assert!((9.9..10.1).contains(&years), "{years}");
    assert!(cert
        .public_key()
        .algorithm
        .algorithm
        .to_id_string()
        .starts_with("1.2.840.10045.2.1"));

    // The key file holds the certificate's key.
    let key = KeyPair::from_pem(&std::fs::read_to_string(dir.join(format!("{name}.key"))).unwrap())
        .unwrap();
    assert_eq!(key.public_key_der(), cert.public_key().raw);
    assert!(key.is_compatible(&rcgen::PKCS_ECDSA_P256_SHA256));
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn generates_a_ca_and_node_certificates() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pki/new");
    let written = generate(&dir, &names(&["a", "b-2.dc_1"])).unwrap();
    let expect: Vec<PathBuf> = [
        "ca.key",
        "ca.pem",
        "a.key",
        "a.pem",
        "b-2.dc_1.key",
        "b-2.dc_1.pem",
    ]
    .iter()
    .map(|f| dir.join(f))
    .collect();
    assert_eq!(written, expect);
    for p in &written {
        assert!(p.is_file(), "{}", p.display());
    }
    for key in ["ca.key", "a.key", "b-2.dc_1.key"] {
        assert_eq!(mode(&dir.join(key)), 0o600, "{key}");
    }

    let ca_der = pem_der(&dir.join("ca.pem"));
    let (_, ca) = X509Certificate::from_der(&ca_der).unwrap();
    assert_eq!(common_name(ca.subject()), CA_COMMON_NAME);
    assert_eq!(ca.issuer(), ca.subject());
    assert!(ca.is_ca());
    ca.verify_signature(None).expect("self-signed");
    let ku = ca.key_usage().unwrap().unwrap().value;
    assert!(ku.key_cert_sign());

    assert_node_cert(&dir, "a");
    assert_node_cert(&dir, "b-2.dc_1");
}

#[test]
fn a_second_run_reuses_the_existing_ca() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), &names(&["a"])).unwrap();
    let ca_before = std::fs::read(dir.path().join("ca.pem")).unwrap();
    let key_before = std::fs::read(dir.path().join("ca.key")).unwrap();

    let written = generate(dir.path(), &names(&["c"])).unwrap();
    assert_eq!(
        written,
        vec![dir.path().join("c.key"), dir.path().join("c.pem")]
    );
    assert_eq!(std::fs::read(dir.path().join("ca.pem")).unwrap(), ca_before);
    assert_eq!(
        std::fs::read(dir.path().join("ca.key")).unwrap(),
        key_before
    );
    assert_node_cert(dir.path(), "a");
    assert_node_cert(dir.path(), "c");
}

#[test]
fn refuses_to_overwrite_and_writes_nothing_then() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), &names(&["a"])).unwrap();
    let before = std::fs::read(dir.path().join("a.pem")).unwrap();
    match generate(dir.path(), &names(&["d", "a"])) {
        Err(CertError::Exists { path }) => assert_eq!(path, dir.path().join("a.pem")),
        other => panic!("{other:?}"),
    }
    assert!(!dir.path().join("d.pem").exists() && !dir.path().join("d.key").exists());
    assert_eq!(std::fs::read(dir.path().join("a.pem")).unwrap(), before);

    // A leftover key alone also blocks, and the error names it.
    std::fs::write(dir.path().join("e.key"), "x").unwrap();
    let e = generate(dir.path(), &names(&["e"])).unwrap_err();
    assert!(
        e.to_string().contains("e.key") && e.to_string().contains("refusing"),
        "{e}"
    );
}

#[test]
fn rejects_bad_duplicate_and_reserved_names() {
    let dir = tempfile::tempdir().unwrap();
    for bad in [&["a b"][..], &[""], &["../x"], &["ca"], &["a", "a"]] {
        let e = generate(dir.path(), &names(bad)).unwrap_err();
        assert!(
            matches!(e, CertError::BadName(_) | CertError::DuplicateName(_)),
            "{bad:?}: {e}"
        );
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing written"
    );
}

#[test]
fn a_half_present_ca_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), "x").unwrap();
    assert!(matches!(
        generate(dir.path(), &names(&["a"])),
        Err(CertError::IncompleteCa { .. })
    ));
    std::fs::write(dir.path().join("ca.key"), "not a key").unwrap();
    let e = generate(dir.path(), &names(&["a"])).unwrap_err();
    assert!(matches!(e, CertError::BadCa { .. }), "{e}");
    assert!(e.to_string().contains("ca.key"), "{e}");
}

#[test]
fn numeric_names_stay_dns_names() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), &names(&["10.0.0.1"])).unwrap();
    assert_node_cert(dir.path(), "10.0.0.1");
}

/// Runs a mutual-TLS handshake with BoringSSL, configured the way rlinkd's QUIC layer is:
/// the server requires a client certificate chaining to its CA, and the client checks the
/// server's certificate for `expected_server`. Returns (client result, server result).
fn handshake(
    server_dir: &Path,
    server: &str,
    client_dir: &Path,
    client: &str,
    expected_server: &str,
) -> (Result<(), String>, Result<(), String>) {
    use boring::ssl::{SslAcceptor, SslConnector, SslFiletype, SslMethod, SslVerifyMode};
    use std::io::{Read, Write};

    let mut acceptor = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
    acceptor
        .set_certificate_file(server_dir.join(format!("{server}.pem")), SslFiletype::PEM)
        .unwrap();
    acceptor
        .set_private_key_file(server_dir.join(format!("{server}.key")), SslFiletype::PEM)
        .unwrap();
    acceptor.set_ca_file(server_dir.join("ca.pem")).unwrap();
    acceptor.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
    let acceptor = acceptor.build();

    let mut connector = SslConnector::builder(SslMethod::tls()).unwrap();
    connector
        .set_certificate_file(client_dir.join(format!("{client}.pem")), SslFiletype::PEM)
        .unwrap();
    connector
        .set_private_key_file(client_dir.join(format!("{client}.key")), SslFiletype::PEM)
        .unwrap();
    connector.set_ca_file(client_dir.join("ca.pem")).unwrap();
    let connector = connector.build();

    let (s, c) = std::os::unix::net::UnixStream::pair().unwrap();
    let server_thread = std::thread::spawn(move || {
        // In TLS 1.3 the server checks the client certificate after its own flight, so read
        // one byte to see the outcome.
        let mut tls = acceptor.accept(s).map_err(|e| e.to_string())?;
        let mut b = [0u8; 1];
        tls.read_exact(&mut b).map_err(|e| e.to_string())
    });
    let client_result = connector
        .connect(expected_server, c)
        .map_err(|e| e.to_string())
        .and_then(|mut tls| {
            tls.write_all(b"x")
                .and_then(|()| tls.flush())
                .map_err(|e| e.to_string())
        });
    (client_result, server_thread.join().unwrap())
}

#[test]
fn boringssl_accepts_the_certificates_for_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), &names(&["a", "b"])).unwrap();
    let (c, s) = handshake(dir.path(), "b", dir.path(), "a", "b");
    assert!(c.is_ok() && s.is_ok(), "client {c:?}, server {s:?}");

    // A node added later with the reused CA is trusted by the earlier ones.
    generate(dir.path(), &names(&["c"])).unwrap();
    let (c, s) = handshake(dir.path(), "a", dir.path(), "c", "a");
    assert!(c.is_ok() && s.is_ok(), "client {c:?}, server {s:?}");
}

#[test]
fn boringssl_rejects_a_wrong_name_or_a_foreign_ca() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), &names(&["a", "b"])).unwrap();
    // The client dials "a" but reaches "b": the SAN check fails on the client.
    let (c, _) = handshake(dir.path(), "b", dir.path(), "a", "a");
    let e = c.unwrap_err();
    assert!(e.contains("Hostname mismatch"), "{e}");

    // A client certificate from another cluster's CA is refused by the server.
    let other = tempfile::tempdir().unwrap();
    generate(other.path(), &names(&["x"])).unwrap();
    // Let x trust b's CA, so that only the server's check of x's certificate can fail.
    std::fs::copy(dir.path().join("ca.pem"), other.path().join("ca.pem")).unwrap();
    let (_, s) = handshake(dir.path(), "b", other.path(), "x", "b");
    let e = s.unwrap_err();
    assert!(e.contains("unable to get local issuer certificate"), "{e}");

    // With both checks passing, the same setup connects (the failure above is the CA's).
    let (c, s) = handshake(dir.path(), "b", dir.path(), "a", "b");
    assert!(c.is_ok() && s.is_ok(), "client {c:?}, server {s:?}");
}
