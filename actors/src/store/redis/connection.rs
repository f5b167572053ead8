//! Where the Redis store is and how connections to it are made.

use std::time::Duration;

use deadpool_redis::redis;
use deadpool_redis::redis::aio::{ConnectionLike, MultiplexedConnection};
use deadpool_redis::redis::cluster_async::ClusterConnection;

use crate::store::{OpenError, StoreError};

/// Where the replay store is: one server (or a proxy in front of several),
/// or the seed nodes of a Redis Cluster. URLs are `redis://` or `rediss://`
/// (TLS, verified against `tls_ca_pem` when given, else the system's roots).
#[derive(Clone)]
pub struct RedisTarget {
    pub urls: Vec<String>,
    pub cluster: bool,
    pub tls_ca_pem: Option<Vec<u8>>,
    /// Replicas each new record must reach before it counts (`WAIT`).
    pub wait_replicas: u32,
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // URLs can carry passwords.
        f.debug_struct("RedisTarget")
            .field("urls", &self.urls.len())
            .field("cluster", &self.cluster)
            .finish()
    }
}

/// Makes connections. A single server's come from deadpool-redis (which
/// bounds their creation by the timeout); a cluster's from redis-rs's
/// cluster client, which follows `MOVED`/`ASK` redirections and a
/// failover's new primaries itself (deadpool-redis's cluster manager takes
/// no TLS roots, and only one connection per thread is kept anyway).
pub(super) enum Connector {
    Single(deadpool_redis::Pool, Duration),
    Cluster(Box<redis::cluster::ClusterClient>, Duration),
}

impl Connector {
    pub(super) fn new(target: &RedisTarget, timeout: Duration) -> Result<Self, OpenError> {
        // Never quote a URL in an error: it may carry a password.
        let unusable = |_| OpenError::UnusableUrl;
        let certs = target.tls_ca_pem.as_ref().map(|pem| redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(pem.clone()),
        });
        if target.cluster {
            let mut builder = redis::cluster::ClusterClientBuilder::new(target.urls.clone())
                .connection_timeout(timeout)
                .response_timeout(timeout);
            if let Some(certs) = certs {
                builder = builder.certs(certs);
            }
            return Ok(Connector::Cluster(
                Box::new(builder.build().map_err(unusable)?),
                timeout,
            ));
        }
        let [url] = target.urls.as_slice() else {
            return Err(OpenError::OneUrl);
        };
        let info = match certs {
            Some(certs) => redis::Client::build_with_tls(url.as_str(), certs)
                .map_err(unusable)?
                .get_connection_info()
                .clone(),
            None => redis::IntoConnectionInfo::into_connection_info(url.as_str()).map_err(unusable)?,
        };
        let manager = deadpool_redis::Manager::new(info).map_err(unusable)?;
        let pool = deadpool_redis::Pool::builder(manager)
            .max_size(64)
            .wait_timeout(Some(timeout))
            .create_timeout(Some(timeout))
            .recycle_timeout(Some(timeout))
            .runtime(deadpool_redis::Runtime::Tokio1)
            .build()
            .map_err(|_| OpenError::Pool)?;
        Ok(Connector::Single(pool, timeout))
    }

    pub(super) fn is_cluster(&self) -> bool {
        matches!(self, Connector::Cluster(..))
    }

    pub(super) async fn connect(&self) -> Result<Conn, StoreError> {
        match self {
            Connector::Single(pool, timeout) => {
                let conn = pool.get().await.map_err(|e| match e {
                    deadpool_redis::PoolError::Timeout(_) => StoreError::Timeout,
                    // Kind and detail only: the error's display can carry the URL.
                    deadpool_redis::PoolError::Backend(e) => {
                        StoreError::Connection(format!("{:?} {}", e.kind(), e.detail().unwrap_or("")))
                    }
                    _ => StoreError::Connection("pool error".into()),
                })?;
                let mut conn = deadpool_redis::Connection::take(conn);
                // redis-rs's own default is 500 ms, shorter than a WAIT of
                // a third of a longer store timeout: every operation is
                // bounded by the store timeout instead.
                conn.set_response_timeout(*timeout);
                Ok(Conn::Single(conn))
            }
            Connector::Cluster(client, timeout) => {
                match tokio::time::timeout(*timeout, client.get_async_connection()).await {
                    Ok(Ok(conn)) => Ok(Conn::Cluster(conn)),
                    Ok(Err(e)) => Err(StoreError::Connection(format!(
                        "cluster: {:?} {}",
                        e.kind(),
                        e.detail().unwrap_or("")
                    ))),
                    Err(_) => Err(StoreError::Timeout),
                }
            }
        }
    }
}

/// A connection to one server or to a cluster; both pipeline any number of
/// concurrent commands, and clones share one connection.
#[derive(Clone)]
pub(super) enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// `WAIT wanted ms` on `conn`; on a cluster, at the primary that owns
/// `key`'s slot (where the record was written, unless the slot was
/// migrating: then the importing node wrote it and this confirms less).
pub(super) async fn wait_for_replicas(conn: &mut Conn, key: &str, wanted: u32, ms: u64) -> redis::RedisResult<i64> {
    use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
    let mut cmd = redis::cmd("WAIT");
    cmd.arg(wanted).arg(ms);
    match conn {
        Conn::Single(c) => cmd.query_async(c).await,
        Conn::Cluster(c) => {
            let route = Route::with_key(key, SlotAddr::Master);
            let v = c
                .route_command(cmd, RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route)))
                .await?;
            Ok(redis::from_redis_value(v)?)
        }
    }
}

pub(super) fn redis_error(e: redis::RedisError) -> StoreError {
    // The error text can carry the URL; keep only its kind and code.
    if e.is_timeout() {
        StoreError::Timeout
    } else if e.kind() == redis::ErrorKind::UnexpectedReturnType {
        StoreError::Corrupt(format!("redis: {:?}", e.kind()))
    } else if e.code() == Some("ERR") && e.detail().is_some_and(|d| d.contains("syntax")) {
        StoreError::Refused(e.detail().unwrap_or_default().chars().take(80).collect())
    } else {
        StoreError::Connection(format!("redis: {:?} {}", e.kind(), e.code().unwrap_or("")))
    }
}
