//! `Application::build`: the one boot sequence, used by the binary and by
//! the black-box tests (on port 0).
//!
//! Order matters and is the point of this file: configuration is already
//! validated, then the genome is verified (and the SIGHUP handler is
//! installed), and only then is a socket bound. A failure anywhere before
//! the bind returns a [`BootError`]; the caller stops the actor system and
//! exits non-zero, and no connection was ever accepted.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr};
use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use settlegate_actors::coalescer::{Coalescer, CoalescerConfig, Exchange};
use settlegate_actors::replay_guard::{ConsumedCache, ReplayGuard};
use settlegate_actors::rpc_pool::{PoolConfig, RpcPool};
use settlegate_actors::store::file::FileStore;
use settlegate_actors::store::redis::RedisStore;
use settlegate_actors::store::{Bounded, Store};
use settlegate_actors::{GenomeSource, GenomeSupervisor};
use settlegate_rules::GenomeError;
use settlegate_rules::genome::TrustRoot;
use settlegate_rules::mpp::Secrets;
use settlegate_rules::seed::SeedVars;

use crate::http::respond::Challenges;
use crate::http::{self, AppState};
use crate::settings::{Settings, SettingsError};
use crate::settle::Settler;
use crate::telemetry::metrics::Metrics;
use settlegate_actors::channels::plan::Schedule;
use settlegate_actors::channels::{ChannelSettler, SettlerConfig};

/// Channels whose last state this process keeps (and queues its own
/// requests on): beyond that, a channel costs one more store read.
const CHANNEL_SLOTS: usize = 100_000;

/// Why the process refused to start. `code()` is what the boot line prints.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error(transparent)]
    Config(#[from] SettingsError),
    /// What the settings name could not be set up.
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error(transparent)]
    Genome(#[from] GenomeError),
}

impl BootError {
    pub fn code(&self) -> &'static str {
        match self {
            BootError::Config(_) | BootError::Setup(_) => "CONFIG_INVALID",
            BootError::Genome(e) => e.code(),
        }
    }
}

/// What the settings name but the process could not set up; each in the
/// words of its own layer (never quoting a secret or a URL).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Seed(#[from] settlegate_rules::seed::SeedError),
    #[error(transparent)]
    Rpc(#[from] settlegate_actors::rpc_pool::PoolError),
    #[error(transparent)]
    Store(#[from] settlegate_actors::store::OpenError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Telemetry(#[from] crate::telemetry::TelemetryError),
    #[error(transparent)]
    Secret(#[from] settlegate_rules::mpp::RefusedSecret),
    #[error("no randomness for the payment secret: {0}")]
    Randomness(getrandom::Error),
    /// Never quotes the key.
    #[error("session.settler_key_file: {0}")]
    SettlerKey(#[from] settlegate_rules::tx_sign::KeyFileError),
    #[error(
        "session.settler_key_file holds the key of {key}, but the genome's recipient (the channels' payee) is {recipient}: \
         only the payee can settle"
    )]
    SettlerNotPayee { key: String, recipient: String },
    /// Never quotes the key.
    #[error("sponsor.key_file: {0}")]
    SponsorKey(settlegate_rules::tx_sign::KeyFileError),
    /// Never quotes the URL.
    #[error("ledger.database_url: {0}")]
    Ledger(#[from] settlegate_actors::ledger::LedgerError),
    #[error(
        "the ledger needs a single Redis server or the local file: on a Redis Cluster a consume's script \
         cannot reach one outbox from every slot"
    )]
    LedgerOnCluster,
    #[error("webhooks: {0}")]
    Webhooks(#[from] settlegate_actors::webhooks::DispatcherError),
}

/// A setup failure, in its own words.
fn setup(e: impl Into<SetupError>) -> BootError {
    BootError::Setup(e.into())
}

/// The RPC pool the settings describe (not started).
pub fn rpc_pool(settings: &Settings, metrics: &Metrics) -> Result<RpcPool, SetupError> {
    Ok(RpcPool::new(
        PoolConfig {
            urls: settings.rpc_urls.clone(),
            call_timeout: settings.rpc_timeout,
            probe_interval: settings.rpc_probe_interval,
            expose_hosts: settings.rpc_expose_endpoint_hosts,
        },
        metrics.rpc.clone(),
    )?)
}

/// The replay store the settings name: Redis (lazily connected) or the
/// local file.
/// With the ledger on, the store keeps its outbox.
pub fn open_store(settings: &Settings) -> Result<Arc<dyn Store>, SetupError> {
    let outbox = settings.ledger.enabled().then_some(settings.ledger.outbox_max);
    Ok(match &settings.redis {
        Some(redis) if redis.cluster && outbox.is_some() => return Err(SetupError::LedgerOnCluster),
        Some(redis) => {
            let store = RedisStore::open(
                &settlegate_actors::RedisTarget {
                    urls: redis.urls.iter().map(|u| u.expose().to_owned()).collect(),
                    cluster: redis.cluster,
                    tls_ca_pem: redis.tls_ca_pem.clone(),
                    wait_replicas: redis.wait_replicas,
                },
                &settings.redis_key_prefix,
                settings.redis_timeout,
            )?;
            Arc::new(match outbox {
                Some(max) => store.with_outbox(max),
                None => store,
            })
        }
        None => {
            let store = FileStore::open(&settings.replay_local_path)?;
            Arc::new(match outbox {
                Some(max) => store.with_outbox(max),
                None => store,
            })
        }
    })
}

/// The ledger's connection pool, if the ledger is on (connects lazily).
pub fn ledger_pool(settings: &Settings) -> Result<Option<settlegate_actors::ledger::Pool>, SetupError> {
    match &settings.ledger.database_url {
        None => Ok(None),
        Some(url) => Ok(Some(settlegate_actors::ledger::pool(url.expose(), 4)?)),
    }
}

/// The webhook dispatcher, if endpoints are configured (not started). Its
/// own small pool: a backlog of retries never takes the ledger's
/// connections.
pub fn webhook_dispatcher(
    settings: &Settings,
    metrics: &Metrics,
) -> Result<Option<settlegate_actors::webhooks::Dispatcher>, SetupError> {
    let w = &settings.webhooks;
    let Some(url) = settings.ledger.database_url.as_ref().filter(|_| w.enabled()) else {
        return Ok(None);
    };
    let config = settlegate_actors::webhooks::DispatcherConfig {
        endpoints: w.endpoints.clone(),
        timeout: w.timeout,
        limits: settlegate_actors::webhooks::db::Limits {
            max_attempts: w.max_attempts,
            max_age: w.max_age,
        },
        backoff_base: w.backoff_base,
        backoff_max: w.backoff_max,
        max_concurrent: w.max_concurrent,
        poll_interval: w.poll_interval,
    };
    let pool = settlegate_actors::ledger::pool(url.expose(), 3)?;
    Ok(Some(settlegate_actors::webhooks::Dispatcher::new(
        pool,
        config,
        metrics.webhooks.clone(),
    )?))
}

/// Each store operation's bound: `redis.timeout_ms`, at least 2 s for the
/// file store (a disk sync).
pub fn store_timeout(settings: &Settings) -> Duration {
    if settings.redis.is_some() {
        settings.redis_timeout
    } else {
        settings.redis_timeout.max(Duration::from_secs(2))
    }
}

pub struct Application {
    port: u16,
    server: Server,
    /// The admin API's server, when it is on: run and stopped with `server`.
    admin: Option<Server>,
    supervisor: Addr<GenomeSupervisor>,
    /// What the shutdown waits for and flushes after the last request.
    coalescer: Addr<Coalescer>,
    pusher: Option<crate::telemetry::push::Pusher>,
    state: AppState,
    /// Held so the dispatcher runs as long as the server.
    _webhooks: Option<Addr<settlegate_actors::webhooks::Dispatcher>>,
}

impl Application {
    /// Boots with the seed `TEMPO_*` variables of the process environment.
    pub async fn build(settings: Settings) -> Result<Self, BootError> {
        let seed = SeedVars::from_lookup(|k| std::env::var(k).ok()).map_err(setup)?;
        Self::build_with_seed(settings, seed).await
    }

    /// Must run inside an actix `System` (`#[actix_web::main]`, `actix_web::rt::System`).
    pub async fn build_with_seed(settings: Settings, seed: SeedVars) -> Result<Self, BootError> {
        let path = settings.genome_path.clone().ok_or_else(|| {
            GenomeError::Missing("no genome configured: set genome.path (SETTLEGATE_GENOME__PATH)".into())
        })?;
        let manifest_root = settings
            .manifest_root
            .clone()
            .or_else(|| path.parent().map(|p| p.to_path_buf()))
            .unwrap_or_else(|| ".".into());
        let source = GenomeSource {
            path,
            manifest_root,
            trust: TrustRoot::new(settings.trusted_keys.iter().copied(), settings.min_threshold),
            seed,
            record_floor: Some(settings.replay_min_record_ttl),
        };
        let metrics = Arc::new(Metrics::new());
        let interval = (settings.genome_reload_interval_seconds > 0)
            .then(|| Duration::from_secs(settings.genome_reload_interval_seconds));
        let (supervisor, genome) = GenomeSupervisor::boot(source, interval, metrics.genome_reloads.clone())?;

        // Everything that can refuse to start is built before any socket is
        // bound: the genome above, the RPC client and the replay store here.
        let rpc = rpc_pool(&settings, &metrics).map_err(setup)?;
        let consumed = ConsumedCache::new(settings.replay_cache_entries, metrics.replay_cache_hits.clone());
        let store = open_store(&settings).map_err(setup)?;
        let store = Bounded::new(store, store_timeout(&settings), metrics.store_ops.clone())
            .bound_ops(settings.redis_max_ops_in_flight);
        let ledger_pool = ledger_pool(&settings).map_err(setup)?;
        let dispatcher = webhook_dispatcher(&settings, &metrics).map_err(setup)?;
        // The operator's reads and the deny list: a pool of their own, each
        // statement bounded on the server's side too.
        let read_pool = match &settings.ledger.database_url {
            Some(url) => Some(
                settlegate_actors::ledger::pool_with(url.expose(), 4, Some(settings.admin.query_timeout))
                    .map_err(setup)?,
            ),
            None => None,
        };
        let denials = settlegate_actors::ledger::deny::DenyList::new(metrics.denials.clone());
        if let Some(pool) = &read_pool {
            // Read before the first request, so a denied payer is refused
            // from the start; a database that does not answer does not stop
            // the boot (the list is read again every deny_refresh_seconds).
            match denials.refresh(pool, settings.admin.query_timeout).await {
                Ok(n) => tracing::info!(entries = n, "the payer deny list is read"),
                Err(e) => tracing::error!(cause = e.cause(), error = %e,
                    "cannot read the payer deny list at boot: no payer is refused until it is read"),
            }
            denials.watch(pool.clone(), settings.admin.deny_refresh, settings.admin.query_timeout);
        }
        let guard = ReplayGuard::new(store.clone(), consumed.clone())
            .hold_absent_for(settings.coalescer_window)
            .instance(&settings.ledger.instance);
        let replay_backend = guard.backend_name();
        let secrets = payment_secrets(&settings)?;
        let settler_key = match &settings.session.settler_key {
            None => None,
            Some(k) => {
                let key = settlegate_rules::tx_sign::PayeeKey::parse(k.expose()).map_err(setup)?;
                let recipient = genome.current().policy.recipient;
                if key.address() != recipient {
                    return Err(setup(SetupError::SettlerNotPayee {
                        key: settlegate_rules::primitives::address_lower(&key.address()),
                        recipient: settlegate_rules::primitives::address_lower(&recipient),
                    }));
                }
                Some(Arc::new(key))
            }
        };

        let sponsor_key = match &settings.sponsor.key {
            None => None,
            Some(k) => Some(
                settlegate_rules::tx_sign::PayeeKey::parse(k.expose()).map_err(|e| setup(SetupError::SponsorKey(e)))?,
            ),
        };

        // Certificates load before any socket exists, like everything else.
        let tls = match &settings.tls {
            Some(files) => Some((files.clone(), crate::tls::server_config(files).map_err(setup)?)),
            None => None,
        };
        // The genome is verified: only now may a socket exist.
        let listener = TcpListener::bind(settings.listen).map_err(|source| {
            setup(SetupError::Listen {
                addr: settings.listen,
                source,
            })
        })?;
        let local = listener.local_addr().map_err(|source| {
            setup(SetupError::Listen {
                addr: settings.listen,
                source,
            })
        })?;
        let admin_listener = match (&read_pool, settings.admin.enabled) {
            (Some(_), true) => {
                let bound = TcpListener::bind(settings.admin.listen).map_err(|source| {
                    setup(SetupError::Listen {
                        addr: settings.admin.listen,
                        source,
                    })
                })?;
                if let Err(e) = crate::send_timeout::limit(&bound, settings.send_timeout) {
                    tracing::warn!(error = %e, "cannot set server.send_timeout_ms on the admin listener");
                }
                Some(bound)
            }
            _ => {
                if let Some(why) = settings.admin.off_because(settings.ledger.enabled()) {
                    tracing::info!(why, "the admin API is off");
                }
                None
            }
        };
        // A client that stops reading its answers loses its connection.
        if let Err(e) = crate::send_timeout::limit(&listener, settings.send_timeout) {
            tracing::warn!(error = %e,
                "cannot set server.send_timeout_ms: a client that stops reading holds its connection");
        }
        let supervisor = supervisor.start();
        let rpc = rpc.start();
        let replay = guard.start();
        let coalescer = Coalescer::new(
            rpc.clone(),
            Some(replay.clone().recipient()),
            CoalescerConfig {
                timeout: settings.lookup_timeout,
                window: settings.coalescer_window,
                max_in_flight: settings.max_lookups_in_flight,
            },
            metrics.coalescer.clone(),
        );
        let sessions = crate::session::Sessions::new(
            settlegate_actors::channels::ChannelBook::new(store.clone(), settings.session.channel_ttl, CHANNEL_SLOTS),
            rpc.clone(),
            settings.session.facts_ttl,
            settings.rpc_timeout,
        )
        .denying(denials.clone());
        let settler_on = settler_key.is_some();
        let channel_settler = {
            let key = settler_key;
            ChannelSettler::new(
                sessions.book.clone(),
                rpc.clone(),
                SettlerConfig {
                    key,
                    chain_id: Some(genome.current().policy.chain_id),
                    schedule: Schedule {
                        amount: settings.session.settle_amount,
                        interval: settings.session.settle_interval.as_secs(),
                    },
                    scan_interval: settings.session.scan_interval,
                    rpc_timeout: settings.rpc_timeout,
                },
                metrics.settler.clone(),
            )
            .start()
        };
        if !settler_on {
            tracing::info!(
                "no session.settler_key_file: the channel settler is off; `settlegate channels` lists what is unsettled"
            );
        }
        let ledger = ledger_pool.map(|pool| {
            let ledger = settlegate_actors::ledger::Ledger::new(
                store.clone(),
                pool,
                settlegate_actors::ledger::LedgerConfig {
                    batch: settings.ledger.batch,
                    poll_interval: settings.ledger.poll_interval,
                    write_timeout: settings.ledger.write_timeout,
                    webhooks: settings.webhooks.endpoints.iter().map(|e| e.target()).collect(),
                },
                metrics.ledger.clone(),
            );
            // Its own thread: a slow database never shares one with requests.
            settlegate_actors::ledger::Ledger::start_in_arbiter(&actix::Arbiter::new().handle(), move |_| ledger)
        });
        if ledger.is_some() {
            metrics.ledger.outbox_max.set(settings.ledger.outbox_max as i64);
            tracing::info!(instance = %settings.ledger.instance, outbox_max = settings.ledger.outbox_max,
                "the ledger is on: every consume is copied to PostgreSQL through the store's outbox");
        }
        // Its own thread too: a slow receiver never shares one with requests.
        let webhooks = dispatcher.map(|d| {
            let names: Vec<&str> = settings.webhooks.endpoints.iter().map(|e| e.name.as_str()).collect();
            tracing::info!(endpoints = ?names, max_attempts = settings.webhooks.max_attempts,
                "webhooks are on: each payment row gets a signed delivery per endpoint");
            settlegate_actors::webhooks::Dispatcher::start_in_arbiter(&actix::Arbiter::new().handle(), move |_| d)
        });
        let store_for_sponsor = store.clone();
        // With Redis, every instance on it shares each lookup (a setting).
        let coalescer = if settings.redis.is_some() && settings.coalescer_share_across_instances {
            coalescer.share_through(Exchange::new(store))
        } else {
            coalescer
        }
        .start();
        if settings.redis.is_none() {
            tracing::warn!(path = %settings.replay_local_path.display(),
                "no redis.url: replay records are kept in a local file; run a single instance only");
        }
        let sponsor = sponsor_key.map(|key| {
            let s = Arc::new(crate::sponsor::Sponsor::new(
                key,
                store_for_sponsor.clone(),
                rpc.clone(),
                settings.rpc_timeout,
                metrics.sponsor.clone(),
            ));
            tracing::info!(sponsor = %s.address(), "fee sponsorship key loaded");
            crate::sponsor::watch(s.clone(), genome.clone(), settings.sponsor.balance_interval);
            s
        });
        let settler = Settler {
            sponsor: sponsor.clone(),
            coalescer: coalescer.clone(),
            guard: replay.clone(),
            consumed,
            min_record_ttl: settings.replay_min_record_ttl,
            lookup_timeout: settings.lookup_timeout,
            arbiter: actix::Arbiter::current(),
            rpc: rpc.clone(),
            retry_window: settings.idempotency_retry_window,
            max_retries: settings.idempotency_max_retries,
            denied: denials.clone(),
        };

        let trusted_proxies = Arc::new(settings.trusted_proxies.clone());
        let state = AppState {
            genome: genome.clone(),
            metrics,
            settler,
            sessions,
            channel_settler,
            settler_on,
            rpc,
            replay,
            replay_backend,
            request_log: settings.log_request_level,
            challenges: Arc::new(Challenges::new(Arc::new(secrets))),
            trusted_proxies,
            forwarded_headers: settings.forwarded_headers,
            gatekeeper: Arc::new(http::callers::Gatekeeper::new(&settings.callers)),
            request_body_timeout: settings.request_body_timeout,
            sponsor,
            discovery: Arc::new(http::discovery::Discovery::new(settings.discovery.clone())),
            ledger: ledger.map(|l| (l, settings.ledger.outbox_max)),
        };
        let pusher = match &settings.otel {
            Some(otel) => Some(crate::telemetry::push::start(otel, state.clone()).map_err(setup)?),
            None => None,
        };
        let app_state = state.clone();
        let origins = settings.cors_allowed_origins.clone();
        let cors_max_age = settings.cors_max_age_seconds;
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(state.clone()))
                .wrap(from_fn(http::head_limits))
                .wrap(actix_web::middleware::Condition::new(
                    !origins.is_empty(),
                    cors(&origins, cors_max_age),
                ))
                // Outside every middleware that may answer without reading
                // the body, inside the one that logs the answer.
                .wrap(from_fn(http::deadline::body_deadline))
                .wrap(from_fn(http::request_context::request_context))
                .configure(http::configure)
        })
        .client_request_timeout(settings.client_request_timeout)
        .shutdown_timeout(10)
        // Signals are ours (run_until_stopped): actix-server's own handling
        // stops the whole system right after the server, before the drain.
        .disable_signals();
        let workers = match settings.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        // Connections beyond the limit wait in the listen backlog; each
        // connection being served holds about 20 KiB of buffers.
        server = server
            .workers(workers)
            .max_connections(settings.max_connections.div_ceil(workers).max(1));
        // The admin listener serves the gate's certificate (one resolver:
        // a renewal reaches both).
        let admin_tls = tls.as_ref().map(|(_, (config, _))| config.clone());
        let server = match tls {
            Some((files, (config, resolver))) => {
                crate::tls::watch(files, resolver);
                server.listen_rustls_0_23(listener, config)
            }
            None => server.listen(listener),
        }
        .map_err(|source| setup(SetupError::Listen { addr: local, source }))?
        .run();
        let admin = match (admin_listener, read_pool) {
            (Some(admin_listener), Some(pool)) => {
                let addr = admin_listener.local_addr().map_err(|source| {
                    setup(SetupError::Listen {
                        addr: settings.admin.listen,
                        source,
                    })
                })?;
                let admin_state = crate::http::admin::AdminState {
                    app: app_state.clone(),
                    pool,
                    denials: denials.clone(),
                    tokens: Arc::new(crate::http::admin::auth::Tokens::new(
                        settings.admin.token_digests.clone(),
                    )),
                    query_timeout: settings.admin.query_timeout,
                    rpc_timeout: settings.rpc_timeout,
                    scans: Arc::new(tokio::sync::Semaphore::new(1)),
                };
                let admin =
                    crate::http::admin::server(admin_state, admin_listener, admin_tls, settings.client_request_timeout)
                        .map_err(|source| setup(SetupError::Listen { addr, source }))?;
                let scheme = if settings.tls.is_some() { "https" } else { "http" };
                tracing::info!(address = %addr, scheme, "admin listening");
                Some(admin)
            }
            _ => None,
        };
        let g = genome.current();
        let scheme = if settings.tls.is_some() { "https" } else { "http" };
        tracing::info!(address = %local, scheme, genome_id = %g.id, version = %g.version, "listening");
        Ok(Application {
            port: local.port(),
            server,
            admin,
            supervisor,
            coalescer,
            pusher,
            state: app_state,
            _webhooks: webhooks,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A handle to stop the server gracefully (tests, signal handling).
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// The supervisor, to trigger a reload without a signal (tests).
    pub fn genome_supervisor(&self) -> Addr<GenomeSupervisor> {
        self.supervisor.clone()
    }

    /// Serves until SIGINT/SIGTERM or a stop through [`Application::handle`],
    /// then drains: the requests in flight are answered (up to 10 s), the
    /// lookups they started end and publish what other instances wait for
    /// (no claim is left held), and a last metrics push reaches the
    /// collector. Spans are flushed when the telemetry guard drops.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let handle = self.server.handle();
        actix::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
                tracing::error!("cannot listen for SIGTERM and SIGINT; stop with SIGKILL");
                return;
            };
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            tracing::info!(
                signal = name,
                "stopping: answering the requests in flight (10 s at most)"
            );
            handle.stop(true).await;
        });
        let admin = self.admin.map(|admin| {
            let handle = admin.handle();
            actix::spawn(async move {
                if let Err(e) = admin.await {
                    tracing::error!(error = %e, "the admin server stopped with an error");
                }
            });
            handle
        });
        let result = self.server.await;
        if let Some(admin) = admin {
            admin.stop(true).await;
        }
        tracing::info!("requests answered; draining lookups and telemetry");
        let drained = self
            .coalescer
            .send(settlegate_actors::coalescer::Drain {
                within: Duration::from_secs(3),
            })
            .await
            .unwrap_or(false);
        if !drained {
            tracing::warn!("lookups still in flight at shutdown; their claims expire by themselves");
        }
        if let Some(pusher) = &self.pusher {
            pusher.push(&self.state).await;
        }
        tracing::info!(drained, "stopped");
        result
    }
}

/// Strict CORS from `cors.allowed_origins`: the methods and headers a
/// browser caller needs, and the answer headers it must be able to read.
fn cors(origins: &[String], max_age: usize) -> actix_cors::Cors {
    use actix_web::http::header;
    let mut c = actix_cors::Cors::default()
        .allowed_methods(["POST", "GET"])
        .allowed_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::HeaderName::from_static("idempotency-key"),
        ])
        .expose_headers([
            header::WWW_AUTHENTICATE,
            header::HeaderName::from_static("payment-receipt"),
            header::RETRY_AFTER,
            header::HeaderName::from_static("x-request-id"),
        ])
        .max_age(max_age);
    for o in origins {
        c = if o == "*" {
            c.allow_any_origin()
        } else {
            c.allowed_origin(o)
        };
    }
    c
}

/// The MPP challenge secrets from the settings, or a random secret for this
/// process when none is configured (said at boot: challenges then only
/// verify here, until a restart).
fn payment_secrets(settings: &Settings) -> Result<Secrets, BootError> {
    let current = match &settings.payment_secret {
        Some(s) => s.expose().as_bytes().to_vec(),
        None => {
            let mut b = [0u8; 32];
            getrandom::fill(&mut b).map_err(|e| setup(SetupError::Randomness(e)))?;
            tracing::warn!(
                "no payment.secret: Payment-scheme challenges use a random secret and only verify on this instance \
                 until it restarts; set payment.secret_file for several instances"
            );
            hex::encode(b).into_bytes()
        }
    };
    let previous = settings
        .payment_previous_secret
        .as_ref()
        .map(|(s, until)| (s.expose().as_bytes().to_vec(), *until));
    Secrets::new(current, previous).map_err(setup)
}

/// A metrics push refreshes what a scrape of `/metrics` refreshes.
impl crate::telemetry::push::Source for AppState {
    async fn refresh(&self) {
        http::ops::refresh_scrape_state(self).await;
    }

    fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}
