//! Our dependencies against the RustSec advisory database, offline: every package of each
//! `Cargo.lock` is checked against the advisories of its crate in a database directory (a
//! snapshot of rustsec/advisory-db), as `cargo audit` does, with nothing to install.
//!
//! An advisory applies to a locked version unless one of its `patched` or `unaffected`
//! requirements matches it; withdrawn advisories never apply. Informational advisories
//! (unmaintained, unsound, notice) count too: CI fails on any advisory that applies unless the
//! ignore file records it with a reason (`ID  reason`, one per line, `#` comments).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One locked package.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Locked {
    pub name: String,
    pub version: semver::Version,
}

/// An advisory that applies to a locked package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub id: String,
    pub package: Locked,
    pub title: String,
    /// `unmaintained`, `unsound`, `notice`, or `vulnerability`.
    pub kind: String,
    pub lockfile: PathBuf,
}

fn err(what: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(what.to_string())
}

/// The packages a `Cargo.lock` pins from a registry (path and git packages have no advisories).
pub fn locked(lockfile: &Path) -> std::io::Result<Vec<Locked>> {
    let text = std::fs::read_to_string(lockfile)
        .map_err(|e| err(format!("reading {}: {e}", lockfile.display())))?;
    let doc: toml::Value =
        toml::from_str(&text).map_err(|e| err(format!("{}: {e}", lockfile.display())))?;
    let mut out = Vec::new();
    for p in doc
        .get("package")
        .and_then(|p| p.as_array())
        .into_iter()
        .flatten()
    {
        let from_registry = p
            .get("source")
            .and_then(|s| s.as_str())
            .is_some_and(|s| s.starts_with("registry+"));
        let (Some(name), Some(version)) = (
            p.get("name").and_then(|n| n.as_str()),
            p.get("version").and_then(|v| v.as_str()),
        ) else {
            continue;
        };
        if !from_registry {
            continue;
        }
        let version = semver::Version::parse(version)
            .map_err(|e| err(format!("{}: {name} {version}: {e}", lockfile.display())))?;
        out.push(Locked {
            name: name.to_string(),
            version,
        });
    }
    Ok(out)
}

/// One advisory's front matter, as far as deciding it needs.
struct Advisory {
    id: String,
    title: String,
    kind: String,
    withdrawn: bool,
    /// `patched` and `unaffected`, together: a version matching any is safe.
    safe: Vec<semver::VersionReq>,
}

fn parse_advisory(path: &Path) -> std::io::Result<Advisory> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| err(format!("reading {}: {e}", path.display())))?;
    let bad = |why: &str| err(format!("{}: {why}", path.display()));
    let rest = text
        .strip_prefix("```toml")
        .ok_or_else(|| bad("no TOML front matter"))?;
    let (front, body) = rest
        .split_once("\n```")
        .ok_or_else(|| bad("unterminated front matter"))?;
    let doc: toml::Value = toml::from_str(front).map_err(|e| bad(&e.to_string()))?;
    let advisory = doc.get("advisory").ok_or_else(|| bad("no [advisory]"))?;
    let field = |k: &str| advisory.get(k).and_then(|v| v.as_str()).map(str::to_string);
    let id = field("id").ok_or_else(|| bad("no id"))?;
    let mut safe = Vec::new();
    for key in ["patched", "unaffected"] {
        for req in doc
            .get("versions")
            .and_then(|v| v.get(key))
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
        {
            let req = req
                .as_str()
                .ok_or_else(|| bad("a version requirement is not text"))?;
            safe.push(
                semver::VersionReq::parse(req)
                    .map_err(|e| bad(&format!("requirement {req:?}: {e}")))?,
            );
        }
    }
    let title = body
        .lines()
        .find_map(|l| l.strip_prefix("# "))
        .unwrap_or("")
        .trim()
        .to_string();
    Ok(Advisory {
        id,
        title,
        kind: field("informational").unwrap_or_else(|| "vulnerability".into()),
        withdrawn: advisory.get("withdrawn").is_some(),
        safe,
    })
}

/// Whether `version` is affected: no safe requirement matches it. A pre-release matches a
/// requirement only as semver says (its comparators must name the same release), so it is
/// also compared as its release, the way RustSec's own checker treats them.
fn affected(advisory: &Advisory, version: &semver::Version) -> bool {
    let mut release = version.clone();
    release.pre = semver::Prerelease::EMPTY;
    !advisory
        .safe
        .iter()
        .any(|req| req.matches(version) || req.matches(&release))
}

/// Every advisory in `db` (its `crates/<name>/*.md`) that applies to a package of `lockfiles`.
pub fn check(lockfiles: &[PathBuf], db: &Path) -> std::io::Result<Vec<Finding>> {
    let crates = db.join("crates");
    if !crates.is_dir() {
        return Err(err(format!(
            "{} is not an advisory database (no crates/ directory)",
            db.display()
        )));
    }
    let mut cache: BTreeMap<String, Vec<Advisory>> = BTreeMap::new();
    let mut findings = Vec::new();
    for lockfile in lockfiles {
        for package in locked(lockfile)? {
            if !cache.contains_key(&package.name) {
                let mut list = Vec::new();
                if let Ok(entries) = std::fs::read_dir(crates.join(&package.name)) {
                    let mut paths: Vec<PathBuf> = entries
                        .flatten()
                        .map(|e| e.path())
                        .filter(|p| p.extension().is_some_and(|e| e == "md"))
                        .collect();
                    paths.sort();
                    for p in paths {
                        list.push(parse_advisory(&p)?);
                    }
                }
                cache.insert(package.name.clone(), list);
            }
            for a in &cache[&package.name] {
                if !a.withdrawn && affected(a, &package.version) {
                    findings.push(Finding {
                        id: a.id.clone(),
                        package: package.clone(),
                        title: a.title.clone(),
                        kind: a.kind.clone(),
                        lockfile: lockfile.clone(),
                    });
                }
            }
        }
    }
    Ok(findings)
}

/// The recorded ignores: advisory id to reason. A line without a reason is refused: every
/// ignore says why.
pub fn ignores(path: &Path) -> std::io::Result<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| err(format!("reading {}: {e}", path.display())))?;
    let mut out = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (id, reason) = line
            .split_once(char::is_whitespace)
            .map(|(i, r)| (i, r.trim()))
            .unwrap_or((line, ""));
        if reason.is_empty() {
            return Err(err(format!(
                "{}:{}: {id} is ignored without a reason",
                path.display(),
                n + 1
            )));
        }
        out.insert(id.to_string(), reason.to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, rel: &str, text: &str) -> PathBuf {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    const LOCK: &str = r#"
version = 4

[[package]]
name = "ours"
version = "0.1.0"

[[package]]
name = "foo"
version = "1.2.3"
source = "registry+https://github.com/rust-lang/crates.io-index"

[[package]]
name = "bar"
version = "0.9.10"
source = "registry+https://github.com/rust-lang/crates.io-index"
"#;

    fn advisory(id: &str, package: &str, versions: &str, extra: &str) -> String {
        format!(
            "```toml\n[advisory]\nid = \"{id}\"\npackage = \"{package}\"\ndate = \"2024-01-01\"\n{extra}\n[versions]\n{versions}\n```\n\n# Something about {package}\n"
        )
    }

    #[test]
    fn an_advisory_applies_unless_a_patched_or_unaffected_requirement_matches() {
        let dir = tempfile::tempdir().unwrap();
        let lock = write(dir.path(), "Cargo.lock", LOCK);
        let db = dir.path().join("db");
        write(
            &db,
            "crates/foo/RUSTSEC-0000-0001.md",
            &advisory("RUSTSEC-0000-0001", "foo", "patched = [\">= 1.2.4\"]", ""),
        );
        write(
            &db,
            "crates/foo/RUSTSEC-0000-0002.md",
            &advisory(
                "RUSTSEC-0000-0002",
                "foo",
                "patched = [\">= 1.3.0\"]\nunaffected = [\"< 1.0.0\", \">= 1.2.0, < 1.2.5\"]",
                "",
            ),
        );
        write(
            &db,
            "crates/foo/RUSTSEC-0000-0003.md",
            &advisory(
                "RUSTSEC-0000-0003",
                "foo",
                "patched = []",
                "withdrawn = \"2024-02-01\"",
            ),
        );
        write(
            &db,
            "crates/bar/RUSTSEC-0000-0004.md",
            &advisory(
                "RUSTSEC-0000-0004",
                "bar",
                "patched = []",
                "informational = \"unmaintained\"",
            ),
        );
        write(
            &db,
            "crates/ours/RUSTSEC-0000-0005.md",
            &advisory("RUSTSEC-0000-0005", "ours", "patched = []", ""),
        );
        let found = check(&[lock], &db).unwrap();
        let ids: Vec<&str> = found.iter().map(|f| f.id.as_str()).collect();
        // 0001: 1.2.3 is below the patch. 0002: unaffected range. 0003: withdrawn. 0004:
        // informational still counts. 0005: a path package is not from the registry.
        assert_eq!(ids, ["RUSTSEC-0000-0001", "RUSTSEC-0000-0004"]);
        assert_eq!(found[1].kind, "unmaintained");
        assert_eq!(found[0].title, "Something about foo");
    }

    #[test]
    fn every_ignore_needs_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let ok = write(
            dir.path(),
            "ok",
            "# comment\nRUSTSEC-1  only key generation uses it\n",
        );
        assert_eq!(
            ignores(&ok).unwrap()["RUSTSEC-1"],
            "only key generation uses it"
        );
        let bad = write(dir.path(), "bad", "RUSTSEC-1\n");
        assert!(ignores(&bad)
            .unwrap_err()
            .to_string()
            .contains("without a reason"));
    }
}
