//! Issue 8: HTTPS with rustls from certificate files. A self-signed
//! certificate serves; plain HTTP on the port does not; a renewed
//! certificate written over the files is picked up without a restart; files
//! that do not load stop the boot (before any socket) or, on renewal, leave
//! the current certificate serving.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::helpers::*;

/// A self-signed certificate for 127.0.0.1 (a fresh P-256 key), as PEM files.
pub(crate) fn self_signed(cert: &Path, key: &Path, cn: &str) {
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
        ])
        .args([
            "-subj",
            &format!("/CN={cn}"),
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ])
        .arg("-keyout")
        .arg(key)
        .arg("-out")
        .arg(cert)
        .output()
        .expect("openssl is installed");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A certificate authority (`ca`) and a server certificate for 127.0.0.1
/// it signed (`cert`, `key`), as a managed Redis with a private CA has.
fn ca_signed(ca: &Path, cert: &Path, key: &Path, work: &Path) {
    std::fs::create_dir_all(work).unwrap();
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(work)
            .output()
            .expect("openssl is installed");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let (ca, cert, key) = (ca.to_str().unwrap(), cert.to_str().unwrap(), key.to_str().unwrap());
    run(&[
        &["req", "-x509"][..],
        &ec,
        &["-days", "2", "-subj", "/CN=test-ca", "-keyout", "ca.key", "-out", ca],
    ]
    .concat());
    run(&[
        &["req"][..],
        &ec,
        &["-subj", "/CN=redis", "-keyout", key, "-out", "leaf.csr"],
    ]
    .concat());
    std::fs::write(
        work.join("ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        ca,
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext",
        "-out",
        cert,
    ]);
}

/// `curl` trusting only `ca`: the status, or `None` when TLS failed.
fn curl(url: &str, ca: &Path) -> Option<u16> {
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
            "--cacert",
        ])
        .arg(ca)
        .arg(url)
        .output()
        .unwrap();
    let code: u16 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0);
    (out.status.success() && code != 0).then_some(code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_a_self_signed_certificate_and_picks_up_a_renewed_one() {
    let w = Workdir::new();
    let (cert, key) = (w.path("cert.pem"), w.path("key.pem"));
    self_signed(&cert, &key, "first");
    let first_ca = w.path("first.pem");
    std::fs::copy(&cert, &first_ca).unwrap();
    let mut env = serve_env(&w.genome(&Genome::single().signed()));
    env.insert("SETTLEGATE_SERVER__TLS_CERT_FILE".into(), cert.display().to_string());
    env.insert("SETTLEGATE_SERVER__TLS_KEY_FILE".into(), key.display().to_string());
    env.insert("SETTLEGATE_SERVER__TLS_RELOAD_SECONDS".into(), "1".into());
    let app = Served::start(&env);
    let url = format!("https://127.0.0.1:{}/healthz", app.addr.port());
    assert_eq!(app.wait_for_log(|l| l["message"] == "listening")["scheme"], "https");

    tokio::task::block_in_place(|| {
        assert_eq!(curl(&url, &first_ca), Some(200));
        // plain HTTP on the TLS port gets no answer
        let plain = Command::new("curl")
            .args([
                "-s",
                "--max-time",
                "3",
                &format!("http://127.0.0.1:{}/healthz", app.addr.port()),
            ])
            .output()
            .unwrap();
        assert!(!String::from_utf8_lossy(&plain.stdout).contains("ok"));

        // renewal: a new key and certificate written over the files
        let (next_cert, next_key) = (w.path("next-cert.pem"), w.path("next-key.pem"));
        self_signed(&next_cert, &next_key, "renewed");
        std::fs::copy(&next_key, &key).unwrap();
        std::fs::copy(&next_cert, &cert).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while curl(&url, &next_cert) != Some(200) {
            assert!(Instant::now() < deadline, "the renewed certificate was never served");
            std::thread::sleep(Duration::from_millis(200));
        }
        assert_eq!(curl(&url, &first_ca), None, "the old certificate is gone");

        // a renewal that does not load leaves the current certificate serving
        std::fs::write(&cert, "not a certificate").unwrap();
        std::thread::sleep(Duration::from_millis(2500));
        assert_eq!(curl(&url, &next_cert), Some(200));
    });
    app.wait_for_log(|l| l["message"] == "TLS certificate reloaded");
    app.wait_for_log(|l| l["level"] == "WARN" && l["message"].as_str().is_some_and(|m| m.contains("do not load")));

    // at boot, files that do not load stop it before any socket exists
    let mut env = env.clone();
    env.insert(
        "SETTLEGATE_REPLAY__LOCAL_PATH".into(),
        w.path("other-replay.redb").display().to_string(),
    );
    let refused = run_refused(&env);
    assert!(
        refused
            .stderr
            .starts_with("settlegate: CONFIG_INVALID: server.tls_cert_file"),
        "{}",
        refused.stderr
    );
    assert_eq!(refused.accepted_connections, 0);
    let mut half = env.clone();
    half.remove("SETTLEGATE_SERVER__TLS_KEY_FILE");
    assert!(
        run_refused(&half)
            .stderr
            .contains("both server.tls_cert_file and server.tls_key_file")
    );
}

/// Issue 8: a managed-Redis style `rediss://` URL. A real redis-server
/// serving only TLS (its certificate self-signed here) is the replay store,
/// verified against `redis.tls_ca_file`: a payment settles once and its
/// record is on that server. The same URL without the root (the system's
/// trust store does not know it) and a plain `redis://` URL to the TLS port
/// never reach it: 503, never a 200, and `/readyz` says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rediss_replay_store_is_verified_against_its_root_and_refused_without_it() {
    use crate::chain::*;
    let w = Workdir::new();
    let (ca, cert, key) = (
        w.path("redis-ca.pem"),
        w.path("redis-cert.pem"),
        w.path("redis-key.pem"),
    );
    ca_signed(&ca, &cert, &key, w.path("work").as_path());
    let port = free_port();
    let tls_args = [
        "--port".to_owned(),
        "0".to_owned(),
        "--tls-port".to_owned(),
        port.to_string(),
        "--tls-cert-file".to_owned(),
        cert.display().to_string(),
        "--tls-key-file".to_owned(),
        key.display().to_string(),
        "--tls-auth-clients".to_owned(),
        "no".to_owned(),
        "--requirepass".to_owned(),
        "tls-test-password".to_owned(),
    ];
    // (the later --port 0 turns plain TCP off: TLS only)
    let args: Vec<&str> = ["--save", "", "--appendonly", "no"]
        .into_iter()
        .chain(tls_args.iter().map(String::as_str))
        .collect();
    let _redis = OwnRedis::start_with(port, &args);
    let chain = Chain::start();
    let mut env = chain_env(&w.genome(&Genome::single().signed()), &chain.url);
    let url = format!("rediss://:tls-test-password@127.0.0.1:{port}");
    env.insert("SETTLEGATE_REDIS__URL".into(), url.clone());
    env.insert("SETTLEGATE_REDIS__TLS_CA_FILE".into(), ca.display().to_string());
    let app = Served::start(&env);
    crate::lookup::ready(&app).await;
    let hash = chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000);
    let paid = app.verify_hash(&hash).await;
    assert_eq!(paid.status, 200, "{:?}", paid.body);
    let again = app.verify_hash(&hash).await;
    assert_eq!((again.status, again.code()), (402, "REPLAYED"));
    let record = format!("{}replay:{}", env["SETTLEGATE_REDIS__KEY_PREFIX"], hash.to_lowercase());
    let out = Command::new("redis-cli")
        .args(["--tls", "--cacert"])
        .arg(&ca)
        .args([
            "-p",
            &port.to_string(),
            "--no-auth-warning",
            "-a",
            "tls-test-password",
            "EXISTS",
            &record,
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "1",
        "the record is on the TLS server"
    );

    let other = chain.transfer(ALPHA_USD, RECIPIENT, 1_000_000);
    // rediss:// trusting only the system's roots; plain redis:// to TLS
    for url in [url.clone(), format!("redis://:tls-test-password@127.0.0.1:{port}")] {
        let mut env = env.clone();
        env.insert("SETTLEGATE_REDIS__URL".into(), url);
        env.remove("SETTLEGATE_REDIS__TLS_CA_FILE");
        let app = Served::start(&env);
        let (status, ready) = app.get_json("/readyz").await;
        assert_eq!(status, 503, "{ready}");
        assert_eq!(ready["components"]["replay_store"]["state"], "unavailable", "{ready}");
        let refused = app.verify_hash(&other).await;
        assert_eq!(
            (refused.status, refused.code()),
            (503, "REPLAY_STORE_UNAVAILABLE"),
            "{:?}",
            refused.body
        );
    }
}
