//! `airgap-testkit`: writes generated content for benchmarks and the shipped example.
//!
//!   airgap-testkit bench DIR IMAGES LAYERS LAYER_BYTES [--k8s]  # layout + bundle.yaml; prints
//!                                                              # image names (--k8s: plus a k8s pack)
//!   airgap-testkit fixture DIR SEED LAYER_BYTES [--busybox FILE] [--node-file PACK_PATH=FILE]...
//!                                                         # the small test fixture (busybox: the
//!                                                         # api and pause images really run)
//!   airgap-testkit wan-proxy LISTEN UPSTREAM RTT_MS MB_PER_S  # a WAN-like TCP proxy for the
//!                                                         # benchmarks; prints its port
//!   airgap-testkit advisories DB IGNORES LOCKFILE...      # RustSec advisories that apply to
//!                                                         # the lockfiles; fails on any not in
//!                                                         # IGNORES (with its reason)

use std::path::PathBuf;
use std::process::ExitCode;

fn fixture_options(args: &[String]) -> std::io::Result<testkit::FixtureOptions> {
    let mut options = testkit::FixtureOptions::default();
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| std::io::Error::other(format!("{flag} needs a value")))?;
        match flag.as_str() {
            "--busybox" => options.busybox = Some(PathBuf::from(value)),
            "--node-file" => {
                let (at, from) = value.split_once('=').ok_or_else(|| {
                    std::io::Error::other(
                        "--node-file takes PACK_PATH=FILE, e.g. bin/runc=/usr/sbin/runc",
                    )
                })?;
                options
                    .node_files
                    .push((at.to_string(), PathBuf::from(from)));
            }
            other => return Err(std::io::Error::other(format!("unknown flag {other}"))),
        }
    }
    Ok(options)
}

fn wan_proxy(listen: &str, upstream: &str, rtt_ms: u64, mb_per_s: u64) -> std::io::Result<()> {
    let upstream: std::net::SocketAddr = upstream
        .parse()
        .map_err(|e| std::io::Error::other(format!("upstream {upstream}: {e}")))?;
    let listener = std::net::TcpListener::bind(listen)?;
    println!("{}", listener.local_addr()?.port());
    use std::io::Write;
    std::io::stdout().flush()?;
    let link = testkit::wan_proxy::Link {
        one_way: std::time::Duration::from_millis(rtt_ms) / 2,
        rate: mb_per_s * 1_000_000,
    };
    testkit::wan_proxy::serve(listener, upstream, link)
}

/// Prints every advisory that applies, and fails when one is not recorded in `ignores`.
fn advisories(
    db: &std::path::Path,
    ignores: &std::path::Path,
    locks: &[PathBuf],
) -> std::io::Result<()> {
    let recorded = testkit::advisories::ignores(ignores)?;
    let findings = testkit::advisories::check(locks, db)?;
    let mut unrecorded = 0;
    for f in &findings {
        let note = match recorded.get(&f.id) {
            Some(reason) => format!("ignored: {reason}"),
            None => {
                unrecorded += 1;
                "NOT RECORDED".to_string()
            }
        };
        println!(
            "{} {} {} ({}, {}): {} [{note}]",
            f.id,
            f.package.name,
            f.package.version,
            f.kind,
            f.lockfile.display(),
            f.title
        );
    }
    for id in recorded
        .keys()
        .filter(|id| !findings.iter().any(|f| &f.id == *id))
    {
        println!(
            "{id}: recorded in {} but no longer applies; remove it",
            ignores.display()
        );
    }
    println!(
        "{} advisories apply to {} lockfile(s); {unrecorded} not recorded",
        findings.len(),
        locks.len()
    );
    if unrecorded > 0 {
        return Err(std::io::Error::other(format!(
            "{unrecorded} advisories apply and are not recorded in {}: update the crate, or record the advisory with the reason it does not reach us",
            ignores.display()
        )));
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize| args.get(i).and_then(|s| s.parse::<u64>().ok());
    let result = match args.first().map(String::as_str) {
        Some("bench") => match (args.get(1), num(2), num(3), num(4)) {
            (Some(dir), Some(images), Some(layers), Some(size)) => testkit::bench_content(
                &PathBuf::from(dir),
                images as usize,
                layers as usize,
                size,
                args.get(5).is_some_and(|a| a == "--k8s"),
            )
            .map(|names| {
                for n in names {
                    println!("{n}");
                }
            }),
            _ => Err(std::io::Error::other(
                "usage: airgap-testkit bench DIR IMAGES LAYERS LAYER_BYTES [--k8s]",
            )),
        },
        Some("wan-proxy") => match (args.get(1), args.get(2), num(3), num(4)) {
            (Some(listen), Some(upstream), Some(rtt_ms), Some(mb)) => wan_proxy(listen, upstream, rtt_ms, mb),
            _ => Err(std::io::Error::other(
                "usage: airgap-testkit wan-proxy LISTEN UPSTREAM RTT_MS MB_PER_S (e.g. 127.0.0.1:0 127.0.0.1:5000 40 25)",
            )),
        },
        Some("fixture") => match (args.get(1), num(2), num(3)) {
            (Some(dir), Some(seed), Some(size)) => fixture_options(&args[4..]).and_then(|o| {
                testkit::fixture_with(&PathBuf::from(dir), seed, size, &o).map(|_| ())
            }),
            _ => Err(std::io::Error::other(
                "usage: airgap-testkit fixture DIR SEED LAYER_BYTES [--busybox FILE] [--node-file PACK_PATH=FILE]...",
            )),
        },
        Some("advisories") if args.len() >= 4 => advisories(
            &PathBuf::from(&args[1]),
            &PathBuf::from(&args[2]),
            &args[3..].iter().map(PathBuf::from).collect::<Vec<_>>(),
        ),
        _ => Err(std::io::Error::other(
            "usage: airgap-testkit bench|fixture|wan-proxy|advisories ...",
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
