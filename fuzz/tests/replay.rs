//! Replays every saved fuzz input through its target: the corpora (what coverage-guided runs
//! kept, one `corpus/<target>.tar.gz` each, read here in place) and the regressions (every
//! input that once crashed a target, `regressions/<target>/`) are tests that need no fuzzer.

use std::io::Read;
use std::path::Path;

use airgap::tar::{EntryKind, Strictness, TarReader};

#[test]
fn every_saved_input_runs_through_its_target_without_a_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (name, target) in airgap_fuzz::TARGETS {
        let packed = root.join("corpus").join(format!("{name}.tar.gz"));
        let file = std::fs::File::open(&packed)
            .unwrap_or_else(|e| panic!("{}: {e}; every target keeps a corpus", packed.display()));
        let mut tar = TarReader::new(flate2::read::GzDecoder::new(file), Strictness::Lenient);
        let mut ran = 0;
        while let Some(header) = tar.next_header().expect("a readable corpus archive") {
            if header.kind != EntryKind::Regular {
                continue;
            }
            let mut input = Vec::with_capacity(header.size as usize);
            (&mut tar)
                .take(header.size)
                .read_to_end(&mut input)
                .expect("a corpus entry");
            eprintln!("{name}: {}", header.path);
            target(&input);
            ran += 1;
        }
        assert!(ran > 0, "{}: empty corpus", packed.display());
        if let Ok(found) = std::fs::read_dir(root.join("regressions").join(name)) {
            for input in found {
                let input = input.expect("a regression entry").path();
                eprintln!("{name}: {}", input.display());
                target(&std::fs::read(&input).expect("a regression input"));
            }
        }
        eprintln!("{name}: {ran} corpus inputs replayed");
    }
}
