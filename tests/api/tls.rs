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
fn self_signed(cert: &Path, key: &Path, cn: &str) {
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
