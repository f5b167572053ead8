//! Benchmark baseline: the least an actix-web service can do for the same
//! request. `scripts/bench` drives it exactly as it drives settlegate (same
//! load generator, connections, body), so settlegate's throughput can be
//! read as a fraction of this.
//!
//! `cargo run --release --example bench_trivial -- 127.0.0.1:0` prints the
//! bound address on stdout and serves `POST /v1/verify` with a fixed body.

use actix_web::{App, HttpResponse, HttpServer, web};

fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:0".into());
    actix_web::rt::System::new().block_on(async move {
        let server = HttpServer::new(|| {
            App::new().route(
                "/v1/verify",
                web::post().to(|body: web::Bytes| async move {
                    // Touch the body like a real handler would.
                    HttpResponse::Ok()
                        .content_type("application/json")
                        .body(format!("{{\"received\":{}}}", body.len()))
                }),
            )
        })
        .bind(addr)?;
        println!("{}", server.addrs()[0]);
        server.run().await
    })
}
