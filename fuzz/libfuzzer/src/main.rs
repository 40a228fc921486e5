//! One libFuzzer binary for every target; `AIRGAP_FUZZ_TARGET` names the one this run drives
//! (`scripts/fuzz.sh` sets it), so a single instrumented build serves them all.
#![no_main]

use std::sync::OnceLock;

fn chosen() -> airgap_fuzz::Target {
    static TARGET: OnceLock<airgap_fuzz::Target> = OnceLock::new();
    *TARGET.get_or_init(|| {
        let name = std::env::var("AIRGAP_FUZZ_TARGET").unwrap_or_default();
        airgap_fuzz::target(&name).unwrap_or_else(|| {
            let names: Vec<_> = airgap_fuzz::TARGETS.iter().map(|(n, _)| *n).collect();
            eprintln!(
                "error: set AIRGAP_FUZZ_TARGET to one of: {}",
                names.join(", ")
            );
            std::process::exit(2)
        })
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| chosen()(data));
