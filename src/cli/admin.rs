//! `settlegate admin token`: a fresh bearer token for the admin API and the
//! digest to configure. The token is printed once, on stdout, and kept
//! nowhere; only its digest belongs in `admin.token_digests`.

use super::AdminCommand;

/// Exit code 0, or 1 without randomness.
pub fn run(cmd: AdminCommand) -> i32 {
    match cmd {
        AdminCommand::Token => match crate::http::admin::auth::mint() {
            Ok((token, digest)) => {
                println!("{}", serde_json::json!({ "token": token, "digest": digest }));
                eprintln!(
                    "settlegate: the token is shown once: give it to the caller (Authorization: Bearer <token>) and \
                     configure only its digest, in admin.token_digests (or admin.token_digests_file)"
                );
                0
            }
            Err(e) => {
                eprintln!("settlegate: no randomness for a token: {e}");
                1
            }
        },
    }
}
