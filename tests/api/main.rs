//! Black-box tests: the real `settlegate` binary, real files, real signals,
//! real TCP. One test binary with modules (faster to build than many).

mod boot;
mod callers;
mod chain;
mod cli;
mod cluster;
mod collector;
mod deadline;
mod demo;
mod endpoints;
mod example_client;
mod faults;
mod forward_auth;
mod forwarded_for;
mod helpers;
mod idempotency;
mod lookup;
mod lost_reply;
mod mathison_compat;
mod metrics;
mod mpp_clients;
mod openapi;
mod payee_tx;
mod payment;
mod pricing;
mod proxy;
mod readme;
mod record_floor;
mod redis_fault;
mod reload;
mod secrets;
mod send_timeout;
mod store_redis;
mod tls;
mod traces;
mod verify;
