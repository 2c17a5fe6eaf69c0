//! TLS on the client port (`--cert-file`, `--key-file`, `--client-cert-auth`,
//! `--trusted-ca-file`), through etcdctl, beside real etcd given the same flags and the same
//! certificates, made here at run time; and between members (the same flags with `--peer-`);
//! and the certificates a member makes itself with `--auto-tls` and `--peer-auto-tls`.

use crate::common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{cluster, error_line, etcd_available, etcdctl, stdout, Flavor, Member};
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};

/// A CA, a server certificate for 127.0.0.1, a client certificate and a member's peer
/// certificate (for both uses) it signed, as PEM files.
#[derive(Clone)]
struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    peer_cert: PathBuf,
    peer_key: PathBuf,
}

fn authority(name: &str) -> (Certificate, KeyPair) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    (params.self_signed(&key).unwrap(), key)
}

/// Writes `name`.pem and `name`-key.pem: a certificate for `purposes` that `ca` signed.
fn issue(
    dir: &Path,
    name: &str,
    purposes: &[ExtendedKeyUsagePurpose],
    ca: &(Certificate, KeyPair),
) -> (PathBuf, PathBuf) {
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = purposes.to_vec();
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.0, &ca.1).unwrap();
    let (cert_file, key_file) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}-key.pem")),
    );
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    (cert_file, key_file)
}

fn pki(tag: &str) -> Pki {
    let dir = common::temp_dir(tag);
    let ca = authority("detcd test CA");
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca.0.pem()).unwrap();
    let (server_cert, server_key) =
        issue(&dir, "server", &[ExtendedKeyUsagePurpose::ServerAuth], &ca);
    let (client_cert, client_key) =
        issue(&dir, "client", &[ExtendedKeyUsagePurpose::ClientAuth], &ca);
    let both = [
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let (peer_cert, peer_key) = issue(&dir, "peer", &both, &ca);
    Pki {
        ca: ca_file,
        server_cert,
        server_key,
        client_cert,
        client_key,
        peer_cert,
        peer_key,
    }
}

fn https_endpoint(member: &Member) -> String {
    format!("https://{}", member.spec.endpoint())
}

/// One member listening with TLS on its client port, and started.
fn start_tls_member(flavor: Flavor, tag: &str, pki: &Pki, extra: &[String]) -> Vec<Member> {
    let mut members = cluster(flavor, 1, tag, &[]);
    let url = https_endpoint(&members[0]);
    members[0].extra_args = vec![
        format!("--listen-client-urls={url}"),
        format!("--advertise-client-urls={url}"),
        format!("--cert-file={}", pki.server_cert.display()),
        format!("--key-file={}", pki.server_key.display()),
    ];
    members[0].extra_args.extend(extra.iter().cloned());
    members[0].start();
    members
}

fn path_flag(flag: &str, path: &Path) -> String {
    format!("--{flag}={}", path.display())
}

/// etcdctl over TLS with the CA, and the client's certificate when `with_client_cert`.
fn secure(member: &Member, pki: &Pki, with_client_cert: bool, args: &[&str]) -> String {
    let mut all = vec![path_flag("cacert", &pki.ca)];
    if with_client_cert {
        all.push(path_flag("cert", &pki.client_cert));
        all.push(path_flag("key", &pki.client_key));
    }
    all.extend(args.iter().map(|a| a.to_string()));
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    let out = etcdctl(&https_endpoint(member), &all, None);
    if out.status.success() {
        stdout(&out)
    } else {
        error_line(&out)
    }
}

fn wait_until_served(member: &Member, pki: &Pki, with_client_cert: bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while secure(member, pki, with_client_cert, &["put", "ready", "1"]) != "OK\n" {
        assert!(
            Instant::now() < deadline,
            "{} never answered over TLS:\n{}",
            member.spec.name,
            member.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What a short session over TLS prints: writes and reads with the CA, then a client that does
/// not trust the member's CA, which never gets through.
fn tls_session(flavor: Flavor, pki: &Pki) -> Vec<String> {
    let members = start_tls_member(flavor, "tls", pki, &[]);
    let m = &members[0];
    common::with_logs_on_failure(&members, || {
        wait_until_served(m, pki, false);
        let mut seen = vec![
            secure(m, pki, false, &["put", "foo", "bar"]),
            secure(m, pki, false, &["get", "foo"]),
            secure(m, pki, false, &["get", "", "--prefix", "--keys-only"]),
            secure(m, pki, false, &["del", "foo"]),
        ];
        let untrusting = etcdctl(
            &https_endpoint(m),
            &["--dial-timeout=1s", "--command-timeout=3s", "get", "foo"],
            None,
        );
        seen.push(error_line(&untrusting));
        seen
    })
}

#[test]
fn etcdctl_over_tls_answers_as_etcd_does() {
    let pki = pki("tls-pki");
    let detcd = tls_session(Flavor::Detcd, &pki);
    assert_eq!(detcd[0], "OK\n");
    assert_eq!(detcd[1], "foo\nbar\n");
    assert_eq!(detcd[4], "Error: context deadline exceeded");
    if etcd_available() {
        assert_eq!(detcd, tls_session(Flavor::Etcd, &pki));
    }
}

#[test]
fn client_cert_auth_lets_in_only_certificates_the_trusted_ca_signed() {
    let pki = pki("tls-mutual-pki");
    let extra = [
        "--client-cert-auth".to_string(),
        path_flag("trusted-ca-file", &pki.ca),
    ];
    let members = start_tls_member(Flavor::Detcd, "tls-mutual", &pki, &extra);
    let m = &members[0];
    common::with_logs_on_failure(&members, || {
        wait_until_served(m, &pki, true);
        assert_eq!(secure(m, &pki, true, &["put", "k", "v"]), "OK\n");
        assert_eq!(
            secure(m, &pki, true, &["get", "k", "--print-value-only"]),
            "v\n"
        );
        let timeouts = ["--dial-timeout=1s", "--command-timeout=3s", "get", "k"];
        assert_eq!(
            secure(m, &pki, false, &timeouts),
            "Error: context deadline exceeded",
            "a client without a certificate"
        );
        // A certificate another CA signed, for the same name, is no better.
        let stranger_dir = common::temp_dir("tls-stranger");
        let stranger_ca = authority("another CA");
        let (cert, key) = issue(
            &stranger_dir,
            "stranger",
            &[ExtendedKeyUsagePurpose::ClientAuth],
            &stranger_ca,
        );
        let stranger = Pki {
            client_cert: cert,
            client_key: key,
            ..pki.clone()
        };
        assert_eq!(
            secure(m, &stranger, true, &timeouts),
            "Error: context deadline exceeded",
            "a client whose certificate another CA signed"
        );
        assert!(m.log_text().contains("rejected connection from"));
    });
}

/// With `--client-cert-auth`, a request without a token acts as the user its certificate
/// names (CN "client"); a token still wins.
fn common_name_session(flavor: Flavor, pki: &Pki) -> Vec<String> {
    let extra = [
        "--client-cert-auth".to_string(),
        path_flag("trusted-ca-file", &pki.ca),
    ];
    let members = start_tls_member(flavor, "tls-cn", pki, &extra);
    let m = &members[0];
    common::with_logs_on_failure(&members, || {
        wait_until_served(m, pki, true);
        let steps: &[&[&str]] = &[
            &["put", "a", "1"],
            &["user", "add", "root:rootpw"],
            &["user", "grant-role", "root", "root"],
            &["user", "add", "client:clientpw"],
            &["role", "add", "reader"],
            &["role", "grant-permission", "reader", "read", "a"],
            &["user", "grant-role", "client", "reader"],
            &["auth", "enable"],
            &["get", "a", "--print-value-only"],
            &["put", "a", "2"],
            &["get", "b"],
            &["user", "list"],
            &["put", "a", "3", "--user=root:rootpw"],
            &["get", "a", "--print-value-only", "--user=root:rootpw"],
        ];
        steps
            .iter()
            .map(|args| secure(m, pki, true, args))
            .collect()
    })
}

#[test]
fn a_client_certificates_common_name_is_the_auth_user_as_in_etcd() {
    let pki = pki("tls-cn-pki");
    let detcd = common_name_session(Flavor::Detcd, &pki);
    assert_eq!(detcd[8], "1\n", "read as the certificate's user: {detcd:?}");
    assert_eq!(
        detcd[9], "Error: etcdserver: permission denied",
        "{detcd:?}"
    );
    if etcd_available() {
        assert_eq!(detcd, common_name_session(Flavor::Etcd, &pki));
    }
}

#[test]
fn http_and_https_listeners_serve_the_same_member() {
    let pki = pki("tls-both-pki");
    let mut members = cluster(Flavor::Detcd, 1, "tls-both", &[]);
    let plain_port = common::free_port();
    let https = https_endpoint(&members[0]);
    members[0].extra_args = vec![
        format!("--listen-client-urls={https},http://127.0.0.1:{plain_port}"),
        format!("--advertise-client-urls={https}"),
        path_flag("cert-file", &pki.server_cert),
        path_flag("key-file", &pki.server_key),
    ];
    members[0].start();
    let m = &members[0];
    common::with_logs_on_failure(&members, || {
        wait_until_served(m, &pki, false);
        let plain = format!("127.0.0.1:{plain_port}");
        assert!(etcdctl(&plain, &["put", "both", "yes"], None)
            .status
            .success());
        assert_eq!(
            secure(m, &pki, false, &["get", "both", "--print-value-only"]),
            "yes\n"
        );
    });
}

#[test]
fn a_tls_flag_error_stops_the_member_with_its_reason() {
    let dir = common::temp_dir("tls-bad");
    let missing = dir.join("missing.pem");
    let mut members = cluster(Flavor::Detcd, 1, "tls-bad", &[]);
    let url = https_endpoint(&members[0]);
    members[0].extra_args = vec![
        format!("--listen-client-urls={url}"),
        path_flag("cert-file", &missing),
        path_flag("key-file", &missing),
    ];
    members[0].start();
    let code = members[0].wait_exit(Duration::from_secs(10));
    assert!(code.is_some_and(|c| c != 0), "exit code {code:?}");
    let log = members[0].log_text();
    assert!(log.contains("missing.pem"), "{log}");
}

/// Turns `member` into one that speaks TLS to its peers, with the certificate `cert` and its
/// `key`, trusting `ca`, and admitting only peers whose certificate that CA signed.
fn with_peer_tls(member: &mut Member, cert: &(PathBuf, PathBuf), ca: &Path) {
    let url = format!("https://127.0.0.1:{}", member.spec.peer_port);
    member.initial_cluster = member.initial_cluster.replace("=http://", "=https://");
    member.extra_args = vec![
        format!("--listen-peer-urls={url}"),
        format!("--initial-advertise-peer-urls={url}"),
        path_flag("peer-cert-file", &cert.0),
        path_flag("peer-key-file", &cert.1),
        path_flag("peer-trusted-ca-file", ca),
        "--peer-client-cert-auth".to_string(),
    ];
}

#[test]
fn members_replicate_over_peer_tls_and_refuse_a_member_of_another_ca() {
    let dir = common::temp_dir("peer-tls-pki");
    let both = [
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let ca = authority("detcd peer CA");
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca.0.pem()).unwrap();
    let member_cert = issue(&dir, "member", &both, &ca);
    let stranger_cert = issue(&dir, "stranger", &both, &authority("another CA"));

    let mut members = cluster(Flavor::Detcd, 3, "peer-tls", &[]);
    with_peer_tls(&mut members[0], &member_cert, &ca_file);
    with_peer_tls(&mut members[1], &member_cert, &ca_file);
    // The third trusts the cluster's CA, but its own certificate is another CA's.
    with_peer_tls(&mut members[2], &stranger_cert, &ca_file);
    for m in members.iter_mut() {
        m.start();
    }
    common::with_logs_on_failure(&members, || {
        common::wait_until_writable(&members[0], Duration::from_secs(30));
        let put = members[0].etcdctl(&["put", "k", "over-tls"]);
        assert!(put.status.success(), "{}", error_line(&put));
        let read =
            |m: &Member| stdout(&m.etcdctl(&["get", "k", "--consistency=s", "--print-value-only"]));
        let deadline = Instant::now() + Duration::from_secs(10);
        while read(&members[1]) != "over-tls\n" {
            assert!(
                Instant::now() < deadline,
                "the second member never got the write"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let list = stdout(&members[0].etcdctl(&["member", "list"]));
        assert_eq!(list.matches("https://127.0.0.1:").count(), 3, "{list}");

        std::thread::sleep(Duration::from_secs(2));
        assert_eq!(read(&members[2]), "", "the stranger must get nothing");
        let refused = |m: &Member| m.log_text().contains("rejected connection");
        assert!(refused(&members[0]) && refused(&members[1]));
    });
}

/// `member` with `--auto-tls` and `--peer-auto-tls` on https URLs, and (as the flag alone does
/// nothing then) `--peer-client-cert-auth`.
fn with_auto_tls(member: &mut Member) {
    let client = https_endpoint(member);
    let peer = format!("https://127.0.0.1:{}", member.spec.peer_port);
    member.initial_cluster = member.initial_cluster.replace("=http://", "=https://");
    member.extra_args = vec![
        format!("--listen-client-urls={client}"),
        format!("--advertise-client-urls={client}"),
        format!("--listen-peer-urls={peer}"),
        format!("--initial-advertise-peer-urls={peer}"),
        "--auto-tls".to_string(),
        "--peer-auto-tls".to_string(),
        "--peer-client-cert-auth".to_string(),
    ];
}

/// etcdctl over TLS without checking the member's certificate, as `--auto-tls` needs.
fn unchecked(member: &Member, args: &[&str]) -> String {
    let mut all = vec!["--insecure-transport=false", "--insecure-skip-tls-verify"];
    all.extend_from_slice(args);
    let out = etcdctl(&https_endpoint(member), &all, None);
    if out.status.success() {
        stdout(&out)
    } else {
        error_line(&out)
    }
}

/// One member with `--auto-tls`: what clients that skip the check and one that checks get.
fn auto_tls_session(flavor: Flavor) -> Vec<String> {
    let mut members = cluster(flavor, 1, "auto-tls-one", &[]);
    with_auto_tls(&mut members[0]);
    members[0].start();
    let m = &members[0];
    common::with_logs_on_failure(&members, || {
        let deadline = Instant::now() + Duration::from_secs(30);
        while unchecked(m, &["put", "ready", "1"]) != "OK\n" {
            assert!(Instant::now() < deadline, "never answered over TLS");
            std::thread::sleep(Duration::from_millis(100));
        }
        let checking = etcdctl(
            &https_endpoint(m),
            &[
                "--insecure-transport=false",
                "--command-timeout=3s",
                "get",
                "foo",
            ],
            None,
        );
        vec![
            unchecked(m, &["put", "foo", "bar"]),
            unchecked(m, &["get", "foo"]),
            unchecked(m, &["del", "foo"]),
            error_line(&checking),
        ]
    })
}

#[test]
fn auto_tls_serves_clients_that_skip_the_check_as_etcd_does() {
    let detcd = auto_tls_session(Flavor::Detcd);
    assert_eq!(detcd[1], "foo\nbar\n");
    assert_eq!(detcd[3], "Error: context deadline exceeded");
    if etcd_available() {
        assert_eq!(detcd, auto_tls_session(Flavor::Etcd));
    }
}

#[test]
fn auto_tls_members_make_their_own_certificates_and_keep_them() {
    let mut members = cluster(Flavor::Detcd, 3, "auto-tls", &[]);
    for m in members.iter_mut() {
        with_auto_tls(m);
        m.start();
    }
    let cert_of = |m: &Member, port: &str| {
        std::fs::read(m.spec.data_dir.join("fixtures").join(port).join("cert.pem")).unwrap()
    };
    let read = |m: &Member| unchecked(m, &["get", "k", "--consistency=s", "--print-value-only"]);
    let (client_cert, peer_cert) = common::with_logs_on_failure(&members, || {
        let deadline = Instant::now() + Duration::from_secs(30);
        while unchecked(&members[0], &["put", "k", "v1"]) != "OK\n" {
            assert!(Instant::now() < deadline, "never writable over peer TLS");
            std::thread::sleep(Duration::from_millis(100));
        }
        let list = unchecked(&members[0], &["member", "list"]);
        assert_eq!(list.matches("https://127.0.0.1:").count(), 6, "{list}");
        while read(&members[2]) != "v1\n" {
            assert!(
                Instant::now() < deadline,
                "the third member never served the write"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let certs = (cert_of(&members[2], "client"), cert_of(&members[2], "peer"));
        assert_ne!(certs.0, certs.1, "one certificate per port");
        certs
    });

    members[2].kill();
    common::with_logs_on_failure(&members, || {
        let deadline = Instant::now() + Duration::from_secs(30);
        // The killed member may have led: a put forwarded to it is lost and times out until
        // the others elect a leader, on etcd as here, so the client retries.
        while unchecked(&members[0], &["put", "k", "v2"]) != "OK\n" {
            assert!(Instant::now() < deadline, "never writable after the kill");
        }
    });
    members[2].start();
    common::with_logs_on_failure(&members, || {
        let deadline = Instant::now() + Duration::from_secs(30);
        while read(&members[2]) != "v2\n" {
            assert!(
                Instant::now() < deadline,
                "the restarted member never caught up"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(
            cert_of(&members[2], "client"),
            client_cert,
            "kept across restarts"
        );
        assert_eq!(cert_of(&members[2], "peer"), peer_cert);
    });
}

/// The flags kubeadm writes into its etcd static pod manifest, with this test's ports, files
/// and data dir: TLS on both ports with client certificates required, a plain metrics
/// listener that the kubelet's probes ask, the initial corruption check and 5 s progress
/// notifications.
fn kubeadm_flags(member: &Member, pki: &Pki, metrics: u16) -> Vec<String> {
    let (client, peer_url) = (
        https_endpoint(member),
        format!("https://127.0.0.1:{}", member.spec.peer_port),
    );
    let name = &member.spec.name;
    vec![
        format!("--advertise-client-urls={client}"),
        path_flag("cert-file", &pki.server_cert),
        "--client-cert-auth=true".to_string(),
        path_flag("data-dir", &member.spec.data_dir),
        "--experimental-initial-corrupt-check=true".to_string(),
        "--experimental-watch-progress-notify-interval=5s".to_string(),
        format!("--initial-advertise-peer-urls={peer_url}"),
        format!("--initial-cluster={name}={peer_url}"),
        path_flag("key-file", &pki.server_key),
        format!("--listen-client-urls={client}"),
        format!("--listen-metrics-urls=http://127.0.0.1:{metrics}"),
        format!("--listen-peer-urls={peer_url}"),
        format!("--name={name}"),
        path_flag("peer-cert-file", &pki.peer_cert),
        "--peer-client-cert-auth=true".to_string(),
        path_flag("peer-key-file", &pki.peer_key),
        path_flag("peer-trusted-ca-file", &pki.ca),
        "--snapshot-count=10000".to_string(),
        path_flag("trusted-ca-file", &pki.ca),
    ]
}

/// What a member started from kubeadm's flags answers: the kubelet's liveness and startup
/// probes on the metrics port, `/metrics` there, 404 for anything else there, and etcdctl with
/// a client certificate on the client port.
fn kubeadm_session(flavor: Flavor, pki: &Pki) -> Vec<String> {
    let mut members = cluster(flavor, 1, "kubeadm", &[]);
    let metrics = common::free_port();
    members[0].extra_args = kubeadm_flags(&members[0], pki, metrics);
    members[0].start();
    let m = &members[0];
    common::with_logs_on_failure(&members, || {
        wait_until_served(m, pki, true);
        let endpoint = format!("127.0.0.1:{metrics}");
        let get = |path: &str| common::http(&endpoint, "GET", path, "").0.to_string();
        let (_, exposition) = common::http(&endpoint, "GET", "/metrics", "");
        assert!(
            exposition.contains("etcd_server_has_leader 1"),
            "{exposition}"
        );
        vec![
            get("/health?exclude=NOSPACE&serializable=true"),
            get("/health?serializable=false"),
            get("/etcdserverpb.KV/Range"),
            secure(m, pki, true, &["put", "/registry/pods/default/p", "spec"]),
            secure(m, pki, true, &["get", "/registry/", "--prefix"]),
            secure(m, pki, false, &["--command-timeout=3s", "get", "x"]),
        ]
    })
}

#[test]
fn a_member_starts_from_kubeadms_etcd_manifest_and_answers_its_probes_as_etcd() {
    let pki = pki("kubeadm-pki");
    let detcd = kubeadm_session(Flavor::Detcd, &pki);
    assert_eq!(detcd[..3], ["200", "200", "404"]);
    assert_eq!(detcd[3], "OK\n");
    assert_eq!(detcd[4], "/registry/pods/default/p\nspec\n");
    if etcd_available() {
        assert_eq!(detcd, kubeadm_session(Flavor::Etcd, &pki));
    }
}

/// Whether an openssl client completes a handshake with `member`'s client port, offering
/// only `protocol` and, for TLS 1.2, only `cipher` (OpenSSL's name).
fn handshakes(member: &Member, protocol: &str, cipher: Option<&str>) -> bool {
    let mut client = std::process::Command::new("openssl");
    client.args(["s_client", "-connect", &member.spec.endpoint(), protocol]);
    if let Some(cipher) = cipher {
        client.args(["-cipher", cipher]);
    }
    client
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl runs")
        .success()
}

/// What clients of each protocol and TLS 1.2 suite can do against a member started with
/// `--cipher-suites` naming one ECDSA suite (the test CA's keys are ECDSA).
fn cipher_suite_session(flavor: Flavor, pki: &Pki) -> Vec<bool> {
    let suites = "--cipher-suites=TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256".to_string();
    let members = start_tls_member(flavor, "ciphers", pki, &[suites]);
    common::with_logs_on_failure(&members, || {
        wait_until_served(&members[0], pki, false);
        vec![
            handshakes(
                &members[0],
                "-tls1_2",
                Some("ECDHE-ECDSA-AES128-GCM-SHA256"),
            ),
            handshakes(
                &members[0],
                "-tls1_2",
                Some("ECDHE-ECDSA-AES256-GCM-SHA384"),
            ),
            handshakes(
                &members[0],
                "-tls1_2",
                Some("ECDHE-ECDSA-CHACHA20-POLY1305"),
            ),
            handshakes(&members[0], "-tls1_3", None),
        ]
    })
}

#[test]
fn cipher_suites_bound_tls_1_2_as_etcds_do() {
    let pki = pki("ciphers-pki");
    let detcd = cipher_suite_session(Flavor::Detcd, &pki);
    assert_eq!(detcd, [true, false, false, true]);
    if etcd_available() {
        assert_eq!(detcd, cipher_suite_session(Flavor::Etcd, &pki));
    }
}

/// A client certificate with serial `serial`, which `ca` signed, and `ca`'s revocation list
/// naming `revoked`.
fn revocable_client(dir: &Path, serial: u64, ca: &(Certificate, KeyPair)) -> (PathBuf, PathBuf) {
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, "client");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.serial_number = Some(rcgen::SerialNumber::from(serial));
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.0, &ca.1).unwrap();
    let files = (
        dir.join(format!("client-{serial}.pem")),
        dir.join(format!("client-{serial}-key.pem")),
    );
    std::fs::write(&files.0, cert.pem()).unwrap();
    std::fs::write(&files.1, key.serialize_pem()).unwrap();
    files
}

fn revocation_list(dir: &Path, revoked: u64, ca: &(Certificate, KeyPair)) -> PathBuf {
    let at = rcgen::date_time_ymd(2024, 1, 1);
    let list = rcgen::CertificateRevocationListParams {
        this_update: at,
        next_update: rcgen::date_time_ymd(2099, 1, 1),
        crl_number: rcgen::SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: vec![rcgen::RevokedCertParams {
            serial_number: rcgen::SerialNumber::from(revoked),
            revocation_time: at,
            reason_code: Some(rcgen::RevocationReason::KeyCompromise),
            invalidity_date: None,
        }],
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    }
    .signed_by(&ca.0, &ca.1)
    .unwrap();
    let file = dir.join("revoked.crl");
    std::fs::write(&file, list.pem().unwrap()).unwrap();
    file
}

/// What two clients get from a member whose `--client-crl-file` revokes the first one's
/// certificate: the revoked one is refused, the other served.
fn revocation_session(flavor: Flavor) -> Vec<String> {
    let dir = common::temp_dir("crl-pki");
    let ca = authority("detcd CRL CA");
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca.0.pem()).unwrap();
    let (server_cert, server_key) =
        issue(&dir, "server", &[ExtendedKeyUsagePurpose::ServerAuth], &ca);
    let revoked = revocable_client(&dir, 7, &ca);
    let good = revocable_client(&dir, 8, &ca);
    let pki = Pki {
        ca: ca_file.clone(),
        server_cert,
        server_key,
        client_cert: good.0,
        client_key: good.1,
        peer_cert: PathBuf::new(),
        peer_key: PathBuf::new(),
    };
    let extra = [
        "--client-cert-auth".to_string(),
        path_flag("trusted-ca-file", &ca_file),
        path_flag("client-crl-file", &revocation_list(&dir, 7, &ca)),
    ];
    let members = start_tls_member(flavor, "crl", &pki, &extra);
    let m = &members[0];
    common::with_logs_on_failure(&members, || {
        wait_until_served(m, &pki, true);
        let revoked_pki = Pki {
            client_cert: revoked.0.clone(),
            client_key: revoked.1.clone(),
            ..pki.clone()
        };
        let timeouts = ["--dial-timeout=1s", "--command-timeout=3s", "put", "k", "v"];
        vec![
            secure(m, &pki, true, &["put", "k", "v"]),
            secure(m, &revoked_pki, true, &timeouts),
        ]
    })
}

#[test]
fn a_revoked_client_certificate_is_refused_as_etcd_refuses_it() {
    let detcd = revocation_session(Flavor::Detcd);
    assert_eq!(detcd, ["OK\n", "Error: context deadline exceeded"]);
    if etcd_available() {
        assert_eq!(detcd, revocation_session(Flavor::Etcd));
    }
}

/// A directory for a test's certificates, and a CA whose certificate is written there.
fn peer_authority(tag: &str) -> (PathBuf, (Certificate, KeyPair), PathBuf) {
    let dir = common::temp_dir(tag);
    let ca = authority("detcd peer CA");
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca.0.pem()).unwrap();
    (dir, ca, ca_file)
}

/// Whether the first of `members` takes a write within 8 s (the cluster formed).
fn takes_a_write_within_8s(members: &[Member]) -> bool {
    let deadline = Instant::now() + Duration::from_secs(8);
    while Instant::now() < deadline {
        let put = members[0].etcdctl(&["--command-timeout=1s", "put", "k", "v"]);
        if put.status.success() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// Whether two members whose peer certificates carry the common name `member` form a cluster
/// when each allows only peers named `allowed`.
fn peers_with_allowed_cn_form_a_cluster(flavor: Flavor, allowed: &str) -> bool {
    let (dir, ca, ca_file) = peer_authority("peer-cn-pki");
    let both = [
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let member_cert = issue(&dir, "member", &both, &ca);
    let mut members = cluster(flavor, 2, "peer-cn", &[]);
    for m in members.iter_mut() {
        with_peer_tls(m, &member_cert, &ca_file);
        m.extra_args
            .push(format!("--peer-cert-allowed-cn={allowed}"));
        m.start();
    }
    takes_a_write_within_8s(&members)
}

#[test]
fn peers_must_show_the_allowed_common_name_as_with_etcd() {
    assert!(peers_with_allowed_cn_form_a_cluster(
        Flavor::Detcd,
        "member"
    ));
    assert!(!peers_with_allowed_cn_form_a_cluster(
        Flavor::Detcd,
        "someone-else"
    ));
    if etcd_available() {
        assert!(peers_with_allowed_cn_form_a_cluster(Flavor::Etcd, "member"));
        assert!(!peers_with_allowed_cn_form_a_cluster(
            Flavor::Etcd,
            "someone-else"
        ));
    }
}

/// Whether two members whose peer certificates name only 127.0.0.2, where they listen for
/// peers, form a cluster: their connections to each other come from 127.0.0.1, which the
/// certificates do not name, so etcd's check of a peer's address refuses them unless skipped.
fn peers_from_an_unnamed_address_form_a_cluster(flavor: Flavor, skip_check: bool) -> bool {
    let (dir, ca, ca_file) = peer_authority("peer-san-pki");
    let mut params = CertificateParams::new(vec!["127.0.0.2".to_string()]).unwrap();
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.0, &ca.1).unwrap();
    let files = (dir.join("member.pem"), dir.join("member-key.pem"));
    std::fs::write(&files.0, cert.pem()).unwrap();
    std::fs::write(&files.1, key.serialize_pem()).unwrap();
    let mut members = cluster(flavor, 2, "peer-san", &[]);
    for m in members.iter_mut() {
        with_peer_tls(m, &files, &ca_file);
        m.initial_cluster = m.initial_cluster.replace("127.0.0.1", "127.0.0.2");
        for arg in m.extra_args.iter_mut() {
            *arg = arg.replace("127.0.0.1", "127.0.0.2");
        }
        m.extra_args.push(format!(
            "--experimental-peer-skip-client-san-verification={skip_check}"
        ));
        m.start();
    }
    takes_a_write_within_8s(&members)
}

#[test]
fn a_peer_certificate_must_name_the_address_the_peer_connects_from_as_with_etcd() {
    assert!(!peers_from_an_unnamed_address_form_a_cluster(
        Flavor::Detcd,
        false
    ));
    assert!(peers_from_an_unnamed_address_form_a_cluster(
        Flavor::Detcd,
        true
    ));
    if etcd_available() {
        assert!(!peers_from_an_unnamed_address_form_a_cluster(
            Flavor::Etcd,
            false
        ));
        assert!(peers_from_an_unnamed_address_form_a_cluster(
            Flavor::Etcd,
            true
        ));
    }
}
