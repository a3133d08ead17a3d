//! `socket-post SOCKET PATH BODY`: POSTs BODY (JSON) to PATH on the agent's unix socket and
//! prints the status line's code, then the response body. The trust tests run it as another
//! user (`Command::uid`), since the kernel tells the agent who is calling by the process's uid.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [socket, path, body] = args.as_slice() else {
        eprintln!("usage: socket-post SOCKET PATH BODY");
        std::process::exit(2);
    };
    let (status, body) =
        gpucost_integration_tests::post_unix(std::path::Path::new(socket), path, body);
    println!("{status}\n{body}");
}
