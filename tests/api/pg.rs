//! PostgreSQL for the ledger's tests: a fresh database per test on the
//! machine's server (`TEST_POSTGRES_URL`, default the local trust-auth
//! server), or a private server of its own that a test may kill -9 and
//! restart ([`OwnPostgres`]). Both are driven with `psql`, which comes
//! with the server.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::free_port;

/// The server the tests use, as a URL without a database.
pub fn server_url() -> String {
    std::env::var("TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
        .trim_end_matches('/')
        .to_owned()
}

/// Runs `sql` on `url`; rows as lines of `|`-separated fields.
pub fn psql(url: &str, sql: &str) -> Result<Vec<String>, String> {
    let out = Command::new("psql")
        .args([
            url,
            "-X",
            "-q",
            "-t",
            "-A",
            "-F",
            "|",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ])
        .output()
        .expect("psql is installed (scripts/test installs PostgreSQL's client)");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

/// A database of its own on a server, dropped with the test.
pub struct FreshDb {
    server: String,
    pub name: String,
}

impl FreshDb {
    pub fn on(server: &str) -> FreshDb {
        let mut b = [0u8; 5];
        getrandom::fill(&mut b).unwrap();
        let name = format!("sgtest_{}_{}", std::process::id(), hex::encode(b));
        psql(&format!("{server}/postgres"), &format!("CREATE DATABASE {name}")).expect("create the test database");
        FreshDb {
            server: server.to_owned(),
            name,
        }
    }

    /// On the machine's server.
    pub fn new() -> FreshDb {
        FreshDb::on(&server_url())
    }

    pub fn url(&self) -> String {
        format!("{}/{}", self.server, self.name)
    }

    pub fn query(&self, sql: &str) -> Vec<String> {
        psql(&self.url(), sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }
}

impl Drop for FreshDb {
    fn drop(&mut self) {
        let _ = psql(
            &format!("{}/postgres", self.server),
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// The server's programs: `PG_BIN`, else Debian's newest version
/// (`scripts/postgres` installs one).
fn pg_tool(name: &str) -> PathBuf {
    if let Ok(dir) = std::env::var("PG_BIN") {
        return PathBuf::from(dir).join(name);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL's server is installed (scripts/postgres)")
        .filter_map(|e| {
            let e = e.ok()?;
            Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin")))
        })
        .collect();
    versions.sort();
    versions.last().expect("a PostgreSQL version").1.join(name)
}

/// The `postgres` user's ids: the server refuses to run as root.
fn postgres_ids() -> (u32, u32) {
    let out = Command::new("id").args(["-u", "postgres"]).output().unwrap();
    let uid = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a postgres user");
    let out = Command::new("id").args(["-g", "postgres"]).output().unwrap();
    let gid = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a postgres group");
    (uid, gid)
}

fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A private PostgreSQL server (its own data directory and port) that a
/// test can kill -9 and start again on the same data.
pub struct OwnPostgres {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
}

impl OwnPostgres {
    pub fn start() -> OwnPostgres {
        let dir = std::env::temp_dir().join(format!("sg-pg-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut init = Command::new(pg_tool("initdb"));
        init.args([
            "-D",
            dir.to_str().unwrap(),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        if running_as_root() {
            let (uid, gid) = postgres_ids();
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).unwrap();
            init.uid(uid).gid(gid);
        }
        let out = init.output().expect("initdb runs");
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        let mut pg = OwnPostgres {
            child: None,
            port: free_port(),
            dir,
        };
        pg.restart();
        pg
    }

    /// Starts the server on its data directory (after a kill: recovery).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let mut cmd = Command::new(pg_tool("postgres"));
        cmd.args(["-D", self.dir.to_str().unwrap(), "-p", &self.port.to_string()])
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                &format!("unix_socket_directories={}", self.dir.display()),
            ])
            .args(["-c", "fsync=on", "-c", "max_connections=50"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group: a kill takes every backend with it.
            .process_group(0);
        if running_as_root() {
            let (uid, gid) = postgres_ids();
            cmd.uid(uid).gid(gid);
        }
        self.child = Some(cmd.spawn().expect("postgres starts"));
        let deadline = Instant::now() + Duration::from_secs(30);
        while psql(&format!("{}/postgres", self.url()), "SELECT 1").is_err() {
            assert!(
                Instant::now() < deadline,
                "postgres did not come up on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `kill -9` of the server and every backend: no shutdown, no flush
    /// beyond what was committed.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: a plain kill(2) of the group this test started.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
        }
    }

    /// The server's URL, without a database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}", self.port)
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        self.kill9();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
