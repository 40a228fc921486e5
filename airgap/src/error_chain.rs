//! An error and its causes on one line, `a: b: c`: what the CLI prints, and what the journal
//! and the audit log record of a failure (they outlive the typed value). Every crate reports
//! through this one function so a cause reads the same wherever it surfaces.

/// `error`'s text and each cause's, joined by `: `. A cause whose text the one before already
/// holds is said once (reqwest and hyper repeat their causes in their own messages); newlines
/// become spaces so a record stays one line.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut out = String::new();
    let mut source: Option<&dyn std::error::Error> = Some(error);
    let mut last = String::new();
    while let Some(err) = source {
        let text = err.to_string();
        if !text.is_empty() && !last.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
        last = text;
        source = err.source();
    }
    out.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::chain;

    #[derive(Debug, thiserror::Error)]
    #[error("{text}")]
    struct E {
        text: &'static str,
        #[source]
        cause: Option<Box<E>>,
    }

    fn e(text: &'static str, cause: Option<E>) -> E {
        E {
            text,
            cause: cause.map(Box::new),
        }
    }

    #[test]
    fn joins_causes_once_on_one_line() {
        let leaf = e("connection refused", None);
        let mid = e("error sending request: connection refused", Some(leaf));
        let top = e("reading the index\nof a.tar", Some(mid));
        assert_eq!(
            chain(&top),
            "reading the index of a.tar: error sending request: connection refused"
        );
    }
}
