//! `--access-log`: one line per request, forwarded or refused, written off
//! the request path within about a second.

#[macro_use]
mod common;

use std::time::{Duration, Instant};

use common::{Behaviour, Croupier, Provider, get, request};

fn lines_are_written(driver: &str) {
    let path =
        std::env::temp_dir().join(format!("croupier-access-{}-{driver}.log", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let log_arg = path.to_str().unwrap().to_string();
    let provider = Provider::start(Behaviour::Echo);
    let croupier = Croupier::start(driver, &["--access-log", &log_arg]);
    let addr = croupier.addr();
    croupier.announce("logged", provider.port(), 60);

    assert_eq!(get(addr, "/first", "logged").status, 200);
    let posted = request(addr, "POST", "/second?q=1", &[("croupier-topic", "logged")], b"hello");
    assert_eq!(posted.status, 200);
    assert_eq!(get(addr, "/third", "nobody").status, 503);

    // Lines reach the file at the once-a-second flush.
    let deadline = Instant::now() + Duration::from_secs(5);
    let text = loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if text.lines().count() >= 3 || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "one line per request:\n{text}");
    // Each core writes its own batches, so lines from different cores may
    // come in any order; find each by its target.
    let line_of = |target: &str| {
        let found = lines.iter().find(|l| l.split(' ').nth(5) == Some(target));
        found.unwrap_or_else(|| panic!("no line for {target}:\n{text}")).to_string()
    };

    let provider_addr = format!("127.0.0.1:{}", provider.port());
    let post = line_of("/second?q=1");
    let fields: Vec<&str> = post.split(' ').collect();
    // time client topic provider method target status in out duration retries
    assert_eq!(fields.len(), 11, "{post}");
    assert!(fields[0].ends_with('Z') && fields[0].contains('T'), "{}", fields[0]);
    assert!(fields[1].starts_with("127.0.0.1:"), "{}", fields[1]);
    assert_eq!(&fields[2..7], ["logged", &provider_addr, "POST", "/second?q=1", "200"]);
    let received: u64 = fields[7].parse().unwrap();
    assert!(received > 5, "the head and the 5-byte body: {received}");
    assert!(fields[8].parse::<u64>().unwrap() > 0);
    assert!(fields[9].ends_with("ms"), "{}", fields[9]);
    assert_eq!(fields[10], "0");
    assert!(line_of("/first").contains(" logged 127.0.0.1:"), "{}", line_of("/first"));
    assert!(line_of("/third").contains(" nobody - GET /third 503 "), "{}", line_of("/third"));
    let _ = std::fs::remove_file(&path);
}

on_both_drivers!(lines_are_written);
