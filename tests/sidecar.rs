//! The provider sidecar, `croupier announce`: the real binary announcing a real provider to
//! real croupiers on loopback.
//!
//! The sidecar is not on croupier's io path (it is blocking std code, the same on either
//! driver), so these tests run croupier on one driver, `auto`; the io itself is tested on both
//! drivers in `core.rs` and `resilience.rs`.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::{
    Behaviour, Croupier, POLL_INTERVAL_MS, Provider, free_port, get, loopback, providers_of,
    request, run_to_exit,
};

/// croupier's io driver in these tests (see the module doc for why one is enough).
const DRIVER: &str = "auto";

/// The topic the sidecars announce.
const TOPIC: &str = "t";

/// How long a sidecar may take to get its provider listed, or to log something awaited.
const WAIT_TIMEOUT_MS: u64 = 10_000;

/// How long a sidecar may take to exit after SIGTERM (its leave included).
const EXIT_TIMEOUT_MS: u64 = 10_000;

/// How long to watch a lease of `--ttl-s 2`: past its end, so only renewals can keep it.
const PAST_TTL_MS: u64 = 3_000;

/// A running `croupier announce`, its stderr collected as it comes.
struct Sidecar {
    child: Child,
    log: Arc<Mutex<String>>,
    log_reader: Option<JoinHandle<()>>,
}

impl Sidecar {
    /// Runs `croupier announce ARGS` with no inherited `CROUPIER_*` variables, plus `env`.
    fn start(args: &[&str], env: &[(&str, &str)]) -> Sidecar {
        let mut command = Command::new(env!("CARGO_BIN_EXE_croupier"));
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("CROUPIER_") {
                command.env_remove(name);
            }
        }
        // Plain info-level lines, whatever the environment running the tests asks for, so
        // the assertions on log text hold.
        command.env("NO_COLOR", "1").env("RUST_LOG", "info").envs(env.iter().copied());
        let mut child = command
            .arg("announce")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn croupier announce");

        let stderr = child.stderr.take().expect("the sidecar's stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let into = Arc::clone(&log);
        // Ends at EOF, when the sidecar exits or is killed.
        let log_reader = thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = into.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        Sidecar { child, log, log_reader: Some(log_reader) }
    }

    fn logs(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the log contains every one of `needles`; fails the test past the timeout.
    fn wait_for_log(&self, needles: &[&str]) {
        let found = wait_until(|| {
            let log = self.logs();
            needles.iter().all(|needle| log.contains(needle))
        });
        assert!(found, "the sidecar never logged all of {needles:?}; log:\n{}", self.logs());
    }

    fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn sigterm(&self) {
        let pid = i32::try_from(self.child.id()).expect("pid fits in pid_t");
        // SAFETY: kill(2) takes plain integers and touches no memory of ours; the pid is our
        // own child, not yet reaped (only `wait_exit` and `drop` reap it).
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill({pid}, SIGTERM): {}", std::io::Error::last_os_error());
    }

    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_millis(EXIT_TIMEOUT_MS);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the sidecar did not exit within {EXIT_TIMEOUT_MS} ms; log:\n{}",
                self.logs()
            );
            thread::sleep(Duration::from_millis(POLL_INTERVAL_MS));
        }
    }

    /// SIGTERM, then the exit status must be 0.
    fn stop(&mut self) {
        self.sigterm();
        let status = self.wait_exit();
        assert_eq!(status.code(), Some(0), "sidecar exit; log:\n{}", self.logs());
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.log_reader.take() {
            let _ = reader.join();
        }
        if thread::panicking() {
            eprintln!("---- sidecar stderr ----\n{}", self.logs());
        }
    }
}

/// Polls `condition` until it holds or `WAIT_TIMEOUT_MS` passes; returns whether it held.
fn wait_until(mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_millis(WAIT_TIMEOUT_MS);
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(POLL_INTERVAL_MS));
    }
}

fn url(croupier: &Croupier) -> String {
    format!("http://{}", croupier.addr())
}

/// Whether `croupier` lists provider 127.0.0.1:`port` under `TOPIC`.
fn listed(croupier: &Croupier, port: u16) -> bool {
    providers_of(&croupier.providers(), TOPIC).contains(&loopback(port))
}

/// The value of `croupier_control_events_total{event="EVENT"}` on `croupier`.
fn control_events(croupier: &Croupier, event: &str) -> u64 {
    let response = request(croupier.addr(), "GET", "/_croupier/metrics", &[], b"");
    assert_eq!(response.status, 200, "metrics: {}", response.summary());
    let series = format!("croupier_control_events_total{{event=\"{event}\"}} ");
    let text = response.body_text();
    let value = text.lines().find_map(|line| line.strip_prefix(series.as_str()));
    value.and_then(|v| v.trim().parse().ok()).unwrap_or_else(|| {
        panic!("no {series}in the metrics:\n{text}");
    })
}

/// The sidecar's standard run: `--every-ms 200 --ttl-s 2` for provider `port`.
fn announce_args(port: &str) -> Vec<&str> {
    vec![
        "--topic",
        TOPIC,
        "--port",
        port,
        "--host",
        "127.0.0.1",
        "--every-ms",
        "200",
        "--ttl-s",
        "2",
    ]
}

/// Announced, renewed past the lease, and gone from every croupier at once on SIGTERM.
#[test]
fn announces_renews_and_leaves_on_sigterm() {
    // Two croupiers: one sidecar serves them all.
    let croupiers = [Croupier::start(DRIVER, &[]), Croupier::start(DRIVER, &[])];
    let provider = Provider::start(Behaviour::Echo);
    let port = provider.port().to_string();
    let urls: Vec<String> = croupiers.iter().map(url).collect();
    let mut args = announce_args(&port);
    args.extend(urls.iter().map(String::as_str));
    let mut sidecar = Sidecar::start(&args, &[]);

    for croupier in &croupiers {
        let appeared = wait_until(|| listed(croupier, provider.port()));
        assert!(
            appeared,
            "{} never listed the provider; log:\n{}",
            croupier.addr(),
            sidecar.logs()
        );
        let response = get(croupier.addr(), "/through-the-sidecar", TOPIC);
        assert_eq!(response.status, 200, "{}", response.summary());
        assert_eq!(response.body_text(), format!("provider {port}"));
    }
    assert_eq!(provider.count(), 2, "each croupier forwarded its request to the provider");

    // A lease of 2 s that is still there after 3 s was renewed.
    thread::sleep(Duration::from_millis(PAST_TTL_MS));
    for croupier in &croupiers {
        assert!(listed(croupier, provider.port()), "lease lapsed on {}", croupier.addr());
    }

    sidecar.stop();
    for croupier in &croupiers {
        assert!(!listed(croupier, provider.port()), "still listed on {}", croupier.addr());
        // Gone by the leave (counted only when it removed a provider), not by the lease
        // running out.
        assert_eq!(control_events(croupier, "leave"), 1, "on {}", croupier.addr());
    }
}

/// With `--token`, the right token (here from `CROUPIER_TOKEN`) gets in; a wrong one never
/// does, and its sidecar keeps trying and says why.
#[test]
fn token_is_sent_and_a_wrong_one_is_retried() {
    let croupier = Croupier::start(DRIVER, &["--token", "s3cret"]);
    let welcome = Provider::start(Behaviour::Echo);
    let refused = Provider::start(Behaviour::Echo);
    let (welcome_port, refused_port) = (welcome.port().to_string(), refused.port().to_string());
    let croupier_url = url(&croupier);

    let mut args = announce_args(&welcome_port);
    args.push(&croupier_url);
    let mut right = Sidecar::start(&args, &[("CROUPIER_TOKEN", "s3cret")]);

    let mut args = announce_args(&refused_port);
    args.extend(["--token", "wrong", &croupier_url]);
    let mut wrong = Sidecar::start(&args, &[]);

    let appeared = wait_until(|| listed(&croupier, welcome.port()));
    assert!(appeared, "the right token was not taken; log:\n{}", right.logs());
    assert_eq!(get(croupier.addr(), "/", TOPIC).status, 200);

    // Three refusals in a row: it names the status and keeps going.
    wrong.wait_for_log(&["announce failed", "401", "failures=3"]);
    assert!(wrong.is_running(), "the sidecar gave up; log:\n{}", wrong.logs());
    assert!(!listed(&croupier, refused.port()), "a wrong token was taken");

    wrong.stop();
    right.stop();
    assert!(providers_of(&croupier.providers(), TOPIC).is_empty());
}

/// A croupier that refuses an announce (507, topic full) and one that is not there at all
/// (connect refused) are retried every round; when the refusal ends, the provider joins and
/// the recovery is logged.
#[test]
fn failures_are_retried_and_recovery_logged() {
    let croupier = Croupier::start(DRIVER, &["--providers-per-topic-max", "1"]);
    let holder = Provider::start(Behaviour::Echo);
    let provider = Provider::start(Behaviour::Echo);
    let (status, reply) = croupier.announce(TOPIC, holder.port(), 30);
    assert_eq!(status, 200, "{reply}");

    let port = provider.port().to_string();
    let nobody = format!("http://127.0.0.1:{}", free_port());
    let croupier_url = url(&croupier);
    let mut args = announce_args(&port);
    args.extend([nobody.as_str(), croupier_url.as_str()]);
    let mut sidecar = Sidecar::start(&args, &[]);

    sidecar.wait_for_log(&["507", "Connection refused", "failures=2"]);
    assert!(!listed(&croupier, provider.port()));

    // The slot frees up; the next round takes it, and says so once.
    let (status, reply) = croupier.leave(TOPIC, holder.port());
    assert_eq!(status, 200, "{reply}");
    let joined = wait_until(|| listed(&croupier, provider.port()));
    assert!(joined, "the provider never joined; log:\n{}", sidecar.logs());
    sidecar.wait_for_log(&["announced again after failures"]);
    assert_eq!(get(croupier.addr(), "/", TOPIC).body_text(), format!("provider {port}"));

    // The missing croupier is still retried; its leave fails too, and the exit is still 0.
    let log = sidecar.logs();
    let refusals = log.lines().filter(|l| l.contains(&nobody) && l.contains("refused")).count();
    assert!(refusals >= 2, "the missing croupier was not retried; log:\n{log}");
    assert!(sidecar.is_running());
    sidecar.stop();
    assert!(!listed(&croupier, provider.port()));
    assert_eq!(sidecar.logs().matches("announced again after failures").count(), 1);
}

#[test]
fn command_line() {
    let timeout = Duration::from_millis(EXIT_TIMEOUT_MS);

    let help = run_to_exit(&["announce", "--help"], timeout);
    assert_eq!(help.status.and_then(|s| s.code()), Some(0), "{help:?}");
    for word in ["--topic", "--port", "--host", "--every-ms", "--ttl-s", "--token", "URL"] {
        assert!(help.stdout.contains(word), "announce --help lacks {word}:\n{}", help.stdout);
    }
    for variable in ["CROUPIER_SIDECAR_TOPIC", "CROUPIER_SIDECAR_EVERY_MS", "CROUPIER_TOKEN"] {
        assert!(help.stdout.contains(variable), "announce --help lacks {variable}");
    }
    let top = run_to_exit(&["--help"], timeout);
    assert!(top.stdout.contains("announce"), "croupier --help lacks the subcommand:\n{top:?}");

    let no_topic = run_to_exit(&["announce", "--port", "8008", "http://127.0.0.1:9"], timeout);
    assert_eq!(no_topic.status.and_then(|s| s.code()), Some(2), "{no_topic:?}");
    assert!(no_topic.stderr.contains("--topic"), "{no_topic:?}");

    let bad_lines: [&[&str]; 5] = [
        &["announce"],
        &["announce", "--topic", "t", "--port", "8008"],
        &["announce", "--topic", "t", "--port", "8008", "https://127.0.0.1:9"],
        &["announce", "--topic", "t", "--port", "8008", "--host", "no host", "http://127.0.0.1:9"],
        &["--cores", "2", "announce", "--topic", "t", "--port", "8008", "http://127.0.0.1:9"],
    ];
    for args in bad_lines {
        let run = run_to_exit(args, timeout);
        assert_eq!(run.status.and_then(|s| s.code()), Some(2), "{args:?}: {run:?}");
        assert!(!run.stderr.trim().is_empty(), "{args:?}: no message");
    }
}
