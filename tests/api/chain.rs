//! The real Tempo dev chain (Foundry's anvil with `--network tempo`) and
//! payments sent to it with Foundry's cast. Installed by `scripts/devtools`
//! into `.devtools/` (or found through `ANVIL` / `CAST`).
//!
//! anvil prints the name of every JSON-RPC method it serves (one line per
//! call, batched or not); [`Chain::calls`] counts them, so tests count
//! lookups where they happen, at the node.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::{free_port, send_signal};

/// Dev account 0 (the payer in these tests) and its well-known key.
pub const PAYER: &str = "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266";
pub const PAYER_KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
/// Dev account 2, a stranger to the policy.
pub const STRANGER: &str = "0x3c44cdddb6a900fa2b585dd299e03d12fa4293bc";
pub const BETA_USD: &str = "0x20c0000000000000000000000000000000000002";

fn tool(var: &str, package: &str, name: &str) -> PathBuf {
    if let Ok(p) = std::env::var(var) {
        return PathBuf::from(p);
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".devtools/node_modules/@foundry-rs")
        .join(package)
        .join("bin")
        .join(name);
    assert!(
        p.exists(),
        "{} is missing: run scripts/devtools (or set {var})",
        p.display()
    );
    p
}

pub fn anvil_bin() -> PathBuf {
    tool("ANVIL", "anvil-linux-amd64", "anvil")
}

pub fn cast_bin() -> PathBuf {
    tool("CAST", "cast-linux-amd64", "cast")
}

/// A running anvil, killed on drop.
pub struct Chain {
    child: Option<Child>,
    pub port: u16,
    pub url: String,
    state: Option<PathBuf>,
    /// JSON-RPC method → calls the node served, from its log.
    served: Arc<Mutex<HashMap<String, usize>>>,
}

impl Chain {
    pub fn start() -> Chain {
        Chain::start_on(free_port(), None, &[])
    }

    /// A chain whose clock runs `seconds` behind the wall clock: its
    /// payments are that old as soon as they are mined.
    pub fn start_in_the_past(seconds: i64) -> Chain {
        let genesis = time::OffsetDateTime::now_utc().unix_timestamp() - seconds;
        Chain::start_on(free_port(), None, &["--timestamp", &genesis.to_string()])
    }

    /// On `port`; with `state`, the chain is loaded from and dumped to that
    /// file, so it survives a restart.
    pub fn start_on(port: u16, state: Option<PathBuf>, extra: &[&str]) -> Chain {
        let mut cmd = Command::new(anvil_bin());
        cmd.args(extra);
        cmd.args(["--host", "127.0.0.1", "--port", &port.to_string(), "--network", "tempo"])
            .args(["--hardfork", "T4", "--chain-id", "42431"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if let Some(s) = &state {
            cmd.arg("--state").arg(s);
        }
        let mut child = cmd.spawn().expect("anvil starts");
        let served = Arc::new(Mutex::new(HashMap::new()));
        let sink = served.clone();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let l = line.trim();
                let is_method = l.split_once('_').is_some_and(|(ns, rest)| {
                    !ns.is_empty()
                        && ns.bytes().all(|b| b.is_ascii_lowercase())
                        && !rest.is_empty()
                        && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                });
                if is_method {
                    *sink.lock().unwrap().entry(l.to_owned()).or_insert(0) += 1;
                }
            }
        });
        let chain = Chain {
            child: Some(child),
            port,
            url: format!("http://127.0.0.1:{port}"),
            state,
            served,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while chain.try_rpc("eth_chainId", &[]).is_none() {
            assert!(Instant::now() < deadline, "anvil did not come up on port {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        chain
    }

    /// How many `method` calls the node has served so far, once its log
    /// has been quiet for a moment (it is written asynchronously).
    pub fn calls(&self, method: &str) -> usize {
        self.settle_log();
        self.served.lock().unwrap().get(method).copied().unwrap_or(0)
    }

    /// Every call the node has served so far, by method.
    pub fn all_calls(&self) -> HashMap<String, usize> {
        self.settle_log();
        self.served.lock().unwrap().clone()
    }

    fn settle_log(&self) {
        let total = || self.served.lock().unwrap().values().sum::<usize>();
        let mut last = total();
        loop {
            std::thread::sleep(Duration::from_millis(150));
            let now = total();
            if now == last {
                return;
            }
            last = now;
        }
    }

    /// Stops anvil gracefully (SIGTERM: it dumps its state when it has one).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            send_signal(child.id() as i32, libc::SIGTERM);
            let _ = child.wait();
        }
    }

    /// Starts anvil again on the same port with the same state file.
    pub fn restart(&mut self) {
        self.stop();
        let again = Chain::start_on(self.port, self.state.clone(), &[]);
        *self = again;
    }

    fn try_rpc(&self, method: &str, params: &[&str]) -> Option<String> {
        let out = Command::new(cast_bin())
            .args(["rpc", "--rpc-url", &self.url, method])
            .args(params)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// A raw JSON-RPC call (`cast rpc`), e.g. `evm_increaseTime`.
    pub fn rpc(&self, method: &str, params: &[&str]) -> String {
        self.try_rpc(method, params)
            .unwrap_or_else(|| panic!("rpc {method} {params:?} failed"))
    }

    /// `cast send` from the payer; returns the receipt JSON.
    pub fn send(&self, extra: &[&str], to: &str, sig: &str, args: &[&str]) -> Value {
        let out = Command::new(cast_bin())
            .args(["send", "--rpc-url", &self.url, "--private-key", PAYER_KEY, "--json"])
            .args(extra)
            .arg(to)
            .arg(sig)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cast send failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        // --async prints the bare hash
        serde_json::from_str(&text).unwrap_or_else(|_| Value::String(text.trim().to_owned()))
    }

    /// `transfer(to, amount)` of `token`; returns the transaction hash.
    pub fn transfer(&self, token: &str, to: &str, amount: u64) -> String {
        let r = self.send(&[], token, "transfer(address,uint256)", &[to, &amount.to_string()]);
        assert_eq!(r["status"], "0x1", "{r}");
        r["transactionHash"].as_str().unwrap().to_owned()
    }

    pub fn transfer_with_memo(&self, token: &str, to: &str, amount: u64, memo: &str) -> String {
        let r = self.send(
            &[],
            token,
            "transferWithMemo(address,uint256,bytes32)",
            &[to, &amount.to_string(), memo],
        );
        assert_eq!(r["status"], "0x1", "{r}");
        r["transactionHash"].as_str().unwrap().to_owned()
    }
}

impl Drop for Chain {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
