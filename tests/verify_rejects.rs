//! Verification refuses every altered, truncated, or malformed bundle, with a specific error,
//! and never panics. These run against the library for speed; `cli_bundle.rs` checks the CLI's
//! exit status and message on the same kinds of input.

mod common;

use airgap::index::{BundleIndex, EntryRecord, FORMAT_VERSION, MAX_INDEX_SIZE};
use airgap::tar::{padding, ustar_header, HeaderKind, END_OF_ARCHIVE};
use airgap::{verify, Digest, EntryPath, PublicKey, SigningKey, VerifyError};
use testkit::Rng;

struct Quiet;
impl bundler::archive::BuildObserver for Quiet {}

/// A real bundle built from the fixture with tiny layers, as bytes, and its key.
fn small_bundle() -> (Vec<u8>, PublicKey) {
    let dir = tempfile::tempdir().unwrap();
    let fixture = testkit::fixture(dir.path(), 3, 700).unwrap();
    let key = SigningKey::generate().unwrap();
    let out = dir.path().join("b.tar");
    let request = bundler::BuildRequest {
        spec: &fixture.spec,
        output: &out,
        key: &key,
        created: 1_700_000_000,
        expires: None,
        split: None,
        jobs: 4,
        cache: Some(&dir.path().join("cache")),
        since: None,
    };
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(bundler::build(&request, std::sync::Arc::new(Quiet)))
        .unwrap();
    (std::fs::read(&out).unwrap(), key.public_key())
}

fn check(bytes: &[u8], key: &PublicKey) -> Result<(), VerifyError> {
    verify(bytes, key).map(|_| ())
}

#[test]
fn the_untouched_bundle_verifies() {
    let (bytes, key) = small_bundle();
    check(&bytes, &key).unwrap();
}

#[test]
fn every_single_byte_flip_is_rejected() {
    let (bytes, key) = small_bundle();
    let mut rng = Rng::new(11);
    let mut mutated = bytes.clone();
    for i in 0..bytes.len() {
        let mask = (rng.next_u64() % 255 + 1) as u8;
        mutated[i] ^= mask;
        assert!(
            check(&mutated, &key).is_err(),
            "flipping byte {i} with {mask:#04x} went unnoticed"
        );
        mutated[i] = bytes[i];
    }
}

/// Verifying a file on every core (a structure pass beside hashing threads) reports exactly
/// what the in-order verifier reports, for flips and truncations anywhere.
#[test]
fn verifying_a_file_in_parallel_reports_what_the_in_order_verifier_reports() {
    let (bytes, key) = small_bundle();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("b.tar");
    let run = |input: &[u8]| {
        std::fs::write(&file, input).unwrap();
        let parallel = airgap::verify_file(&file, &key, 2, |_| {})
            .map(|v| v.index_digest())
            .map_err(|e| e.to_string());
        let in_order = verify(input, &key)
            .map(|v| v.index_digest())
            .map_err(|e| e.to_string());
        (parallel, in_order)
    };
    let (parallel, in_order) = run(&bytes);
    assert!(parallel.is_ok());
    assert_eq!(parallel, in_order);
    let mut rng = Rng::new(13);
    let mut mutated = bytes.clone();
    let tail = bytes.len().saturating_sub(1100);
    let positions = (0..bytes.len())
        .step_by(23)
        .chain((tail..bytes.len()).step_by(3));
    for i in positions {
        let mask = (rng.next_u64() % 255 + 1) as u8;
        mutated[i] ^= mask;
        let (parallel, in_order) = run(&mutated);
        assert!(parallel.is_err(), "flip at {i} accepted");
        assert_eq!(parallel, in_order, "flip at {i}");
        mutated[i] = bytes[i];
    }
    for cut in (0..bytes.len()).step_by(97) {
        let (parallel, in_order) = run(&bytes[..cut]);
        assert_eq!(parallel, in_order, "cut at {cut}");
    }
    // Anything after the end marker, zeros included.
    for extra in [&[0u8; 512][..], &[0u8; 1][..], b"x"] {
        let mut longer = bytes.clone();
        longer.extend_from_slice(extra);
        let (parallel, in_order) = run(&longer);
        assert!(parallel.is_err(), "{} extra bytes accepted", extra.len());
        assert_eq!(parallel, in_order);
    }
}

#[test]
fn every_truncation_is_rejected() {
    let (bytes, key) = small_bundle();
    let mut rng = Rng::new(12);
    let mut cuts: Vec<usize> = (0..bytes.len()).step_by(512).collect();
    cuts.extend((0..200).map(|_| (rng.next_u64() as usize) % bytes.len()));
    for cut in cuts {
        let err = check(&bytes[..cut], &key).expect_err(&format!("truncated at {cut} accepted"));
        let msg = err.to_string();
        assert!(
            msg.contains("truncated") || msg.contains("empty") || msg.contains("missing"),
            "cut {cut}: {msg}"
        );
    }
}

#[test]
fn randomized_mutations_never_verify_and_never_panic() {
    let (bytes, key) = small_bundle();
    let mut rng = Rng::new(13);
    for round in 0..3000 {
        let mut m = bytes.clone();
        for _ in 0..(rng.next_u64() % 4 + 1) {
            let at = (rng.next_u64() as usize) % m.len();
            match rng.next_u64() % 5 {
                0 => m[at] ^= (rng.next_u64() % 255 + 1) as u8,
                1 => m[at] = (rng.next_u64() & 0xff) as u8 ^ 0x80,
                2 => {
                    let len = ((rng.next_u64() % 1024) as usize).min(m.len() - at);
                    m.drain(at..at + len.max(1).min(m.len() - at));
                }
                3 => {
                    let junk: Vec<u8> = (0..rng.next_u64() % 600 + 1)
                        .map(|_| rng.next_u64() as u8)
                        .collect();
                    m.splice(at..at, junk);
                }
                _ => {
                    // Duplicate a whole block somewhere else: a replayed header or data.
                    let block = (at / 512) * 512;
                    if block + 512 <= m.len() {
                        let copy = m[block..block + 512].to_vec();
                        let to = ((rng.next_u64() as usize) % (m.len() / 512)) * 512;
                        m.splice(to..to, copy);
                    }
                }
            }
        }
        if m == bytes {
            continue;
        }
        let result = std::panic::catch_unwind(|| check(&m, &key));
        match result {
            Ok(r) => assert!(r.is_err(), "round {round}: a mutated bundle verified"),
            Err(_) => panic!("round {round}: the verifier panicked"),
        }
    }
}

#[test]
fn wrong_key_is_rejected() {
    let (bytes, _) = small_bundle();
    let other = SigningKey::generate().unwrap().public_key();
    let err = check(&bytes, &other).unwrap_err().to_string();
    assert!(err.contains("not signed by key"), "{err}");
}

// ---- hand-made archives: each one signed properly, wrong in exactly one way ----

struct Raw {
    path: String,
    flag: u8,
    data: Vec<u8>,
}

fn regular(path: &str, data: &[u8]) -> Raw {
    Raw {
        path: path.into(),
        flag: b'0',
        data: data.to_vec(),
    }
}

fn header(path: &str, flag: u8, size: u64) -> [u8; 512] {
    let mut h = ustar_header(path, HeaderKind::Regular, 0o644, size, 0).unwrap();
    if flag != b'0' {
        h[156] = flag;
        h[148..156].copy_from_slice(b"        ");
        let sum: u64 = h.iter().map(|&b| b as u64).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    }
    h
}

fn record(path: &str, data: &[u8]) -> EntryRecord {
    EntryRecord {
        path: EntryPath::new(path).unwrap(),
        size: data.len() as u64,
        sha256: Digest::of(data),
    }
}

fn index(entries: Vec<EntryRecord>) -> BundleIndex {
    BundleIndex {
        format_version: FORMAT_VERSION,
        name: "t".into(),
        version: "1.0.0".parse().unwrap(),
        created: "2024-01-01T00:00:00Z".into(),
        expires: None,
        platforms: vec!["all".into()],
        packs: vec![],
        images: vec![],
        entries,
        base: None,
        expected_blobs: vec![],
        signature_keys: vec![],
    }
}

fn layout_records() -> Vec<EntryRecord> {
    vec![record("oci-layout", b"L"), record("index.json", b"I")]
}

fn layout_entries() -> Vec<Raw> {
    vec![regular("oci-layout", b"L"), regular("index.json", b"I")]
}

fn archive(key: &SigningKey, index_bytes: &[u8], signed: bool, entries: &[Raw]) -> Vec<u8> {
    let mut all = vec![regular("bundle.json", index_bytes)];
    if signed {
        all.push(regular(
            "bundle.json.sig",
            &key.sign(index_bytes).to_bytes(),
        ));
    }
    let mut out = Vec::new();
    for e in all.iter().chain(entries) {
        out.extend(header(&e.path, e.flag, e.data.len() as u64));
        out.extend(&e.data);
        out.extend(vec![0u8; padding(e.data.len() as u64) as usize]);
    }
    out.extend(END_OF_ARCHIVE);
    out
}

fn craft(records: Vec<EntryRecord>, entries: Vec<Raw>) -> Result<(), VerifyError> {
    let key = SigningKey::generate().unwrap();
    let bytes = archive(&key, &index(records).to_bytes(), true, &entries);
    check(&bytes, &key.public_key())
}

fn expect(result: Result<(), VerifyError>, needle: &str) {
    let msg = result.expect_err("crafted archive verified").to_string();
    assert!(msg.contains(needle), "expected `{needle}` in: {msg}");
}

#[test]
fn crafted_control_case_verifies() {
    craft(layout_records(), layout_entries()).unwrap();
}

#[test]
fn unsigned_bundle_is_rejected() {
    let key = SigningKey::generate().unwrap();
    let bytes = archive(
        &key,
        &index(layout_records()).to_bytes(),
        false,
        &layout_entries(),
    );
    expect(
        check(&bytes, &key.public_key()),
        "expected bundle.json.sig: the bundle is unsigned",
    );
}

#[test]
fn entry_missing_from_archive_is_rejected() {
    let mut records = layout_records();
    records.push(record("blobs/sha256/aa", b"x").clone());
    records.last_mut().unwrap().path = EntryPath::new(Digest::of(b"x").blob_path()).unwrap();
    expect(
        craft(records, layout_entries()),
        "is missing from the archive",
    );
}

#[test]
fn entry_added_to_archive_is_rejected() {
    let mut entries = layout_entries();
    entries.push(regular("extra", b"smuggled"));
    expect(
        craft(layout_records(), entries),
        "entry extra is not listed in bundle.json",
    );
}

#[test]
fn duplicated_entry_is_rejected() {
    let mut entries = layout_entries();
    entries.push(regular("index.json", b"I"));
    expect(
        craft(layout_records(), entries),
        "entry index.json appears more than once",
    );
    let mut entries = layout_entries();
    entries.insert(0, regular("bundle.json", b"{}"));
    expect(
        craft(layout_records(), entries),
        "entry bundle.json appears more than once",
    );
}

#[test]
fn altered_entry_is_rejected() {
    let mut entries = layout_entries();
    entries[1].data = b"J".to_vec();
    expect(
        craft(layout_records(), entries),
        "entry index.json has sha256",
    );
}

#[test]
fn absolute_and_escaping_paths_are_rejected() {
    for (path, needle) in [
        ("/etc/cron.d/x", "is absolute"),
        ("../../etc/passwd", "contains `..`"),
        ("blobs/../../x", "contains `..`"),
    ] {
        let mut entries = layout_entries();
        entries.push(regular(path, b"x"));
        expect(craft(layout_records(), entries), needle);
    }
}

#[test]
fn links_devices_and_directories_are_rejected() {
    for (flag, kind) in [
        (b'2', "symlink"),
        (b'1', "hardlink"),
        (b'3', "character device"),
        (b'4', "block device"),
        (b'6', "fifo"),
        (b'5', "directory"),
        (b'x', "pax extended header"),
        (b'L', "GNU long-name header"),
    ] {
        let mut entries = layout_entries();
        entries.insert(
            1,
            Raw {
                path: "blobs".into(),
                flag,
                data: vec![],
            },
        );
        expect(
            craft(layout_records(), entries),
            &format!("entry blobs is a {kind}"),
        );
    }
}

#[test]
fn oversized_index_is_refused_before_reading_it() {
    let key = SigningKey::generate().unwrap();
    let huge = vec![b' '; MAX_INDEX_SIZE as usize + 1];
    let bytes = archive(&key, &huge, true, &layout_entries());
    expect(
        check(&bytes, &key.public_key()),
        "bundle.json is 33554433 bytes, more than",
    );
}

#[test]
fn index_that_lists_a_blob_under_the_wrong_name_is_rejected() {
    let mut records = layout_records();
    let mut r = record("blobs/sha256/x", b"x");
    r.path = EntryPath::new(Digest::of(b"y").blob_path()).unwrap();
    records.push(r);
    expect(
        craft(records, layout_entries()),
        "not the digest its name says",
    );
}

#[test]
fn not_a_bundle_and_empty_inputs_are_named() {
    let key = SigningKey::generate().unwrap().public_key();
    expect(check(&END_OF_ARCHIVE, &key), "the archive is empty");
    let mut other = Vec::new();
    other.extend(header("README", b'0', 2));
    other.extend(b"hi");
    other.extend(vec![0u8; 510]);
    other.extend(END_OF_ARCHIVE);
    expect(
        check(&other, &key),
        "first entry is `README`, expected bundle.json",
    );
    expect(check(b"not a tar at all", &key), "truncated");
}

/// Random-access reads (what seeding uses) accept an entry only when its header is the
/// canonical one at the place the signed index puts it and its bytes hash right.
fn read_all_random_access(path: &std::path::Path, key: &PublicKey) -> Result<(), VerifyError> {
    use std::io::Read;
    let archive = airgap::BundleArchive::open(path, key)?;
    // Backwards, to show order does not matter.
    for entry in archive.verified().index().entries.iter().rev() {
        let mut reader = archive.open_entry(entry.path.as_str())?;
        let mut sink = Vec::new();
        reader.read_to_end(&mut sink)?;
        reader.finish()?;
    }
    Ok(())
}

#[test]
fn random_access_reads_notice_every_byte_flip_they_read() {
    use std::os::unix::fs::FileExt;
    let (bytes, key) = small_bundle();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.tar");
    std::fs::write(&path, &bytes).unwrap();
    read_all_random_access(&path, &key).unwrap();
    // Everything but the end-of-archive marker is read by a random-access pass.
    let used = bytes.len() - END_OF_ARCHIVE.len();
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    for (i, &byte) in bytes.iter().enumerate() {
        file.write_at(&[byte ^ 0x20], i as u64).unwrap();
        let result = read_all_random_access(&path, &key);
        if i < used {
            assert!(result.is_err(), "flipping byte {i} went unnoticed");
        }
        file.write_at(&[byte], i as u64).unwrap();
    }
    // Truncation inside an entry is an error too, not a short read.
    file.set_len((used - 100) as u64).unwrap();
    assert!(read_all_random_access(&path, &key).is_err());
}

/// Found by the `bundle_verify` fuzz target: an entry header in canonical ustar form but with
/// another mtime or mode than the writer's passed the streaming verifier while the bundle's
/// random-access reader (serve, seed, parallel verify) refused it. Both now refuse it alike.
#[test]
fn an_entry_stamped_unlike_the_rest_is_rejected_by_both_verifiers() {
    let key = SigningKey::generate().unwrap();
    let index_bytes = index(layout_records()).to_bytes();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("b.tar");
    for (mode, mtime) in [(0o644, 1), (0o755, 0)] {
        let mut bytes = archive(&key, &index_bytes, true, &layout_entries());
        // The third header (after bundle.json and its signature): oci-layout.
        let at = bytes.len()
            - END_OF_ARCHIVE.len()
            - 2 * (512 + 512) // index.json and oci-layout entries, one block of data each
            ;
        let restamped = ustar_header("oci-layout", HeaderKind::Regular, mode, 1, mtime).unwrap();
        bytes[at..at + 512].copy_from_slice(&restamped);
        let in_order = check(&bytes, &key.public_key()).map_err(|e| e.to_string());
        std::fs::write(&file, &bytes).unwrap();
        let parallel = airgap::verify_file(&file, &key.public_key(), 2, |_| {})
            .map(|_| ())
            .map_err(|e| e.to_string());
        assert_eq!(
            in_order,
            Err("tar header of entry oci-layout is not in canonical form".to_string()),
            "mode {mode:o}, mtime {mtime}"
        );
        assert_eq!(parallel, in_order);
    }
}

#[test]
fn an_expiry_that_is_not_a_time_or_precedes_creation_is_refused() {
    let with_expiry = |expires: &str| {
        let mut i = index(layout_records());
        i.expires = Some(expires.into());
        BundleIndex::parse(&i.to_bytes())
    };
    let parsed = with_expiry("2025-01-01T00:00:00Z").expect("a later expiry is valid");
    assert_eq!(
        parsed.expires_at().unwrap(),
        Some(humantime::parse_rfc3339("2025-01-01T00:00:00Z").unwrap())
    );
    let err = with_expiry("next tuesday").unwrap_err().to_string();
    assert!(
        err.contains("`expires` is `next tuesday`, not an RFC 3339 time"),
        "{err}"
    );
    let err = with_expiry("2023-06-01T00:00:00Z").unwrap_err().to_string();
    assert!(
        err.contains("expires (2023-06-01T00:00:00Z) before it was created"),
        "{err}"
    );
    // Signed in: an expiry cannot be added or moved without the key.
    let key = SigningKey::generate().unwrap();
    let mut i = index(layout_records());
    i.expires = Some("2025-01-01T00:00:00Z".into());
    let signed = i.to_bytes();
    let sig = key.sign(&signed);
    assert!(sig.verify(&key.public_key(), &signed).is_ok());
    let mut moved = i.clone();
    moved.expires = Some("2099-01-01T00:00:00Z".into());
    assert!(sig.verify(&key.public_key(), &moved.to_bytes()).is_err());
}

/// A signed index is still input: names a reader would turn into repositories, URLs or paths
/// are checked at verify, so a hand-signed bundle naming a pack `x/../../registry.k8s.io/pause`
/// never reaches the seeder.
#[test]
fn names_that_are_not_repository_names_are_rejected_even_when_signed() {
    use airgap::{ImageRecord, PackRecord};
    let pack = |name: &str, version: &str| PackRecord {
        name: name.into(),
        version: version.into(),
        layer: "addon".into(),
        reference: format!("packs/{name}:{version}"),
        digest: Digest::of(b"pack"),
        images: vec![],
    };
    let image = |reference: &str, mirror: &str| ImageRecord {
        source: reference.into(),
        reference: reference.into(),
        mirror_repository: mirror.into(),
        digest: Digest::of(b"m"),
        upstream_digest: Digest::of(b"m"),
        media_type: airgap::oci::OCI_MANIFEST.into(),
        size: 1,
        signature: None,
        attestations: None,
    };
    let long = "a".repeat(300);
    let key = SigningKey::generate().unwrap();
    let signed = |index: BundleIndex| {
        let bytes = archive(&key, &index.to_bytes(), true, &layout_entries());
        check(&bytes, &key.public_key())
    };
    let mut control = index(layout_records());
    control.packs = vec![pack("platform-core", "1.2.0")];
    control.images = vec![image(
        "registry.k8s.io/pause:3.10.1",
        "registry.k8s.io/pause",
    )];
    signed(control.clone()).unwrap();
    for name in [
        "x/../../registry.k8s.io/pause",
        "..",
        "%2e%2e",
        "Upper",
        "/abs",
        long.as_str(),
    ] {
        let mut bad = control.clone();
        bad.packs = vec![pack(name, "1.2.0")];
        expect(signed(bad), "pack name");
    }
    let mut bad = control.clone();
    bad.packs = vec![pack("platform-core", "1.0.0+x")];
    expect(signed(bad), "pack version");
    let mut bad = control.clone();
    bad.version = "4.5.0+r2".parse().unwrap();
    expect(signed(bad), "release version");
    let mut bad = control.clone();
    bad.packs[0].reference = "packs/../registry.k8s.io/pause:3.10.1".into();
    expect(signed(bad), "pack reference");
    for (reference, mirror) in [
        ("registry.k8s.io/pause:3.10.1", "registry.k8s.io/../pause"),
        ("registry.k8s.io/pause:3.10.1", "registry.k8s.io/other"),
        (
            "registry.k8s.io/a/../pause:3.10.1",
            "registry.k8s.io/a/../pause",
        ),
    ] {
        let mut bad = control.clone();
        bad.images = vec![image(reference, mirror)];
        let err = signed(bad).expect_err(mirror).to_string();
        assert!(
            err.contains("mirror repository") || err.contains("image reference"),
            "{mirror}: {err}"
        );
    }
}
