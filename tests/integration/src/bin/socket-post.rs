//! `socket-post SOCKET PATH BODY`: POSTs BODY (JSON) to PATH on the agent's unix socket and
//! prints the status line's code, then the response body. The trust tests run it as another
//! user (`Command::uid`), since the kernel tells the agent who is calling by the process's uid.
//!
//! `socket-post --flood SECONDS SOCKET PATH BODY`: posts as fast as it can for SECONDS, with
//! `{n}` in BODY replaced by a counter, and prints how many answers had each status
//! (`201 64`, `429 5012`, ...), one per line.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use gpucost_integration_tests::post_unix;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [flag, seconds, socket, path, body] if flag == "--flood" => {
            let until = Instant::now() + Duration::from_secs_f64(seconds.parse().expect("seconds"));
            let mut counts: BTreeMap<u16, u64> = BTreeMap::new();
            let mut n = 0u64;
            while Instant::now() < until {
                n += 1;
                let (status, _) = post_unix(
                    Path::new(socket),
                    path,
                    &body.replace("{n}", &n.to_string()),
                );
                *counts.entry(status).or_default() += 1;
            }
            for (status, count) in counts {
                println!("{status} {count}");
            }
        }
        [socket, path, body] => {
            let (status, body) = post_unix(Path::new(socket), path, body);
            println!("{status}\n{body}");
        }
        _ => {
            eprintln!("usage: socket-post [--flood SECONDS] SOCKET PATH BODY");
            std::process::exit(2);
        }
    }
}
