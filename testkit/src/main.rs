//! `airgap-testkit`: writes generated content for benchmarks and the shipped example.
//!
//!   airgap-testkit bench DIR IMAGES LAYERS LAYER_BYTES [--k8s]  # layout + bundle.yaml; prints
//!                                                              # image names (--k8s: plus a k8s pack)
//!   airgap-testkit fixture DIR SEED LAYER_BYTES           # the small test fixture

use std::path::PathBuf;
use std::process::ExitCode;

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
        Some("fixture") => match (args.get(1), num(2), num(3)) {
            (Some(dir), Some(seed), Some(size)) => {
                testkit::fixture(&PathBuf::from(dir), seed, size).map(|_| ())
            }
            _ => Err(std::io::Error::other(
                "usage: airgap-testkit fixture DIR SEED LAYER_BYTES",
            )),
        },
        _ => Err(std::io::Error::other(
            "usage: airgap-testkit bench|fixture ...",
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
