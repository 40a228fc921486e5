//! Repository names and tags as the distribution spec defines them. Every name from input
//! passes through here before it reaches an index, a URL or a path: the bundler at build, the
//! index check at verify, the registry client and server. Names are data, never path
//! segments, and this grammar is what keeps `..`, `%2e`, `/` and upper case out.

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
pub fn is_valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: `.`, `_`, `__` or any number of `-`, between alphanumerics.
        let start = i;
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if b.get(i) == Some(&b'_') {
                    i += 1;
                }
            }
            b'-' => {
                while b.get(i) == Some(&b'-') {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == start || !b.get(i).copied().is_some_and(is_alnum) {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// A repository name: components separated by `/`, at most 255 bytes.
pub fn is_valid_repository(name: &str) -> bool {
    !name.is_empty() && name.len() <= 255 && name.split('/').all(is_valid_component)
}

/// The longest pack name: `packs/<name>` is a repository, and names appear in file names.
pub const MAX_PACK_NAME: usize = 128;

/// A pack name: one repository path component (`packs/<name>` is its repository), at most
/// [`MAX_PACK_NAME`] bytes.
pub fn is_valid_pack_name(name: &str) -> bool {
    name.len() <= MAX_PACK_NAME && is_valid_component(name)
}

/// What a valid pack name looks like, for error messages.
pub const PACK_NAME_RULE: &str =
    "one lowercase repository name component: [a-z0-9] separated by single `.`, `_`, `__` or dashes, at most 128 characters, no `/`";

/// What a valid tag looks like, for error messages.
pub const TAG_RULE: &str = "a tag: 1-128 of [A-Za-z0-9_.-], not starting with `.` or `-`";

/// A tag: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
pub fn is_valid_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_names() {
        for good in [
            "a",
            "library/nginx",
            "127.0.0.1_5001/x/y",
            "a__b/c--d",
            "docker.io/x",
        ] {
            assert!(is_valid_repository(good), "{good}");
        }
        for bad in [
            "", "..", "a/../b", "/a", "a/", "A", "a//b", "a___b", "a.", "-a", "a:b", "a/%2e%2e",
        ] {
            assert!(!is_valid_repository(bad), "{bad}");
        }
        assert!(is_valid_tag("v1.2.3-rc_1"));
        assert!(!is_valid_tag(".x"));
        assert!(!is_valid_tag(&"a".repeat(129)));
    }
}
