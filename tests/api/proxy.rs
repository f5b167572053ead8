//! A real reverse proxy in front of the service: Caddy (Debian's 2.6,
//! installed by `scripts/caddy`) with `forward_auth` to `GET /v1/authorize`,
//! proxying what the gate lets through to a protected application.
//!
//! One Caddy process serves two sites on free loopback ports:
//! - the front, configured as an operator would (see [`front_site`]);
//! - the protected application, a plain site that answers 200 with a JSON
//!   echo of what it received (path, method and the headers the gate
//!   copies) and logs every request it serves to a file, so tests count
//!   the requests that reached it where they landed ([`Caddy::upstream_hits`]).
//!   Like any MPP resource server, it returns the `Payment-Receipt` it was
//!   handed (by the gate, through `copy_headers`) on its response, so a paying
//!   MPP client gets its receipt.
//!
//! Caddy writes state under `$HOME` and the XDG directories even with the
//! admin endpoint off (`.step/`, `autosave.json`); the process gets a temp
//! dir for all of them, and no system service is ever involved.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::free_port;

/// Where `scripts/caddy` puts it, unless `CADDY` says otherwise.
fn caddy_bin() -> PathBuf {
    PathBuf::from(std::env::var("CADDY").unwrap_or_else(|_| "caddy".into()))
}

/// The headers `/v1/authorize` returns on 200 for the proxy to copy upstream.
pub const COPIED: &str = "X-Settlement-Payer X-Settlement-Tx X-Settlement-Amount Payment-Receipt";

/// The front site: the README's `forward_auth` block marked `marker` as
/// written (only the gate's port differs), then `reverse_proxy` to the application, plus
/// `bind` (tests listen on loopback only).
pub fn front_site(marker: &str, port: u16, gate: SocketAddr, upstream: u16) -> String {
    let block = crate::readme::block(marker);
    assert!(
        block.contains("127.0.0.1:8402") && block.contains(&format!("copy_headers {COPIED}")),
        "the README's Caddy block names the gate at 127.0.0.1:8402 and copies {COPIED}: {block}"
    );
    let block = block.replace("127.0.0.1:8402", &gate.to_string());
    format!(
        ":{port} {{
	bind 127.0.0.1
{block}
	reverse_proxy 127.0.0.1:{upstream}
}}
"
    )
}

/// The protected application: what it received, as JSON. `"upstream":
/// "reached"` appears in no answer of the gate, so a body that has it came
/// from here.
const UPSTREAM_BODY: &str = r#"{"upstream":"reached","method":"{method}","path":"{path}","uri":"{uri}","x_settlement_payer":"{header.X-Settlement-Payer}","x_settlement_tx":"{header.X-Settlement-Tx}","x_settlement_amount":"{header.X-Settlement-Amount}","payment_receipt":"{header.Payment-Receipt}","authorization":"{header.Authorization}"}"#;

/// A running Caddy, killed on drop.
pub struct Caddy {
    child: Child,
    dir: tempfile::TempDir,
    pub port: u16,
    pub upstream_port: u16,
}

impl Caddy {
    /// Caddy in front of the gate listening at `gate`.
    pub fn start(gate: SocketAddr) -> Caddy {
        Caddy::start_with("caddy-forward-auth", gate, &[])
    }

    /// Caddy with the README's block marked `marker` in front, and `env`
    /// in its environment (for `{env.*}` placeholders).
    pub fn start_with(marker: &str, gate: SocketAddr, env: &[(&str, &str)]) -> Caddy {
        Caddy::start_front(|port, upstream| front_site(marker, port, gate, upstream), env)
    }

    /// Caddy whose front site is the README's block `marker`, whole: the
    /// gate (`127.0.0.1:8402`) and the API (`127.0.0.1:9000`) it names
    /// become the test's, nothing else changes.
    pub fn start_site(marker: &str, gate: SocketAddr) -> Caddy {
        Caddy::start_front(
            |port, upstream| {
                let block = crate::readme::block(marker);
                assert!(
                    block.contains("127.0.0.1:8402") && block.contains("reverse_proxy 127.0.0.1:9000"),
                    "the README's block {marker} names the gate at 127.0.0.1:8402 and the API at 127.0.0.1:9000: {block}"
                );
                let block = block
                    .replace("127.0.0.1:8402", &gate.to_string())
                    .replace("127.0.0.1:9000", &format!("127.0.0.1:{upstream}"));
                format!(":{port} {{\n\tbind 127.0.0.1\n{block}\n}}\n")
            },
            &[],
        )
    }

    /// Caddy with `front(port, upstream port)` as its front site.
    fn start_front(front: impl FnOnce(u16, u16) -> String, env: &[(&str, &str)]) -> Caddy {
        let dir = tempfile::tempdir().unwrap();
        let (port, upstream_port) = (free_port(), free_port());
        let upstream_log = dir.path().join("upstream.log");
        let caddyfile = format!(
            "{{
	admin off
	auto_https off
	storage file_system {storage}
}}

{front}
:{upstream_port} {{
	bind 127.0.0.1
	log {{
		output file {log}
	}}
	header Content-Type application/json
	@receipt header Payment-Receipt *
	header @receipt Payment-Receipt {{header.Payment-Receipt}}
	respond `{UPSTREAM_BODY}` 200
}}
",
            storage = dir.path().join("storage").display(),
            front = front(port, upstream_port),
            log = upstream_log.display(),
        );
        let config = dir.path().join("Caddyfile");
        std::fs::write(&config, caddyfile).unwrap();
        let home = dir.path().join("home");
        std::fs::create_dir(&home).unwrap();
        let out = std::fs::File::create(dir.path().join("caddy.log")).unwrap();
        let child = Command::new(caddy_bin())
            .args(["run", "--config"])
            .arg(&config)
            .args(["--adapter", "caddyfile"])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", &home)
            .env("XDG_CONFIG_HOME", home.join("config"))
            .env("XDG_DATA_HOME", home.join("data"))
            .envs(env.iter().copied())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("caddy is installed (run scripts/caddy, or set CADDY)");
        let mut caddy = Caddy {
            child,
            dir,
            port,
            upstream_port,
        };
        caddy.wait_until_listening();
        caddy
    }

    fn wait_until_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        let up = |port: u16| {
            TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_millis(100)).is_ok()
        };
        while !(up(self.port) && up(self.upstream_port)) {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("caddy exited ({status}): {}", self.log());
            }
            assert!(Instant::now() < deadline, "caddy did not start: {}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A URL of the front, which the paying client calls.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Caddy's own log (start-up, errors such as an auth service that is down).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("caddy.log")).unwrap_or_default()
    }

    /// The requests the protected application has served, from its access
    /// log (one JSON line each), once the log has been quiet for a moment:
    /// Caddy writes the line when the handler returns, which can be just
    /// after the client got the response.
    pub fn upstream_requests(&self) -> Vec<Value> {
        let read = || {
            std::fs::read_to_string(self.dir.path().join("upstream.log"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect::<Vec<Value>>()
        };
        let mut last = read();
        loop {
            std::thread::sleep(Duration::from_millis(150));
            let now = read();
            if now.len() == last.len() {
                return now;
            }
            last = now;
        }
    }

    pub fn upstream_hits(&self) -> usize {
        self.upstream_requests().len()
    }
}

impl Drop for Caddy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
