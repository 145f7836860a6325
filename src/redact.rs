//! Keeps secrets out of logs and error messages.

use url::Url;

/// A URL with its password replaced by `***`. Anything unparsable is hidden whole
/// after the scheme, because it may hold a secret we cannot locate.
pub fn redact_url(raw: &str) -> String {
    match Url::parse(raw) {
        Ok(mut url) => {
            if url.password().is_some() {
                let _ = url.set_password(Some("***"));
            }
            let pairs: Vec<(String, String)> = url
                .query_pairs()
                .map(|(k, v)| {
                    let secret = ["password", "secret", "token", "key"]
                        .iter()
                        .any(|s| k.to_ascii_lowercase().contains(s));
                    let v = if secret {
                        "***".to_string()
                    } else {
                        v.into_owned()
                    };
                    (k.into_owned(), v)
                })
                .collect();
            if !pairs.is_empty() {
                url.query_pairs_mut().clear().extend_pairs(pairs);
            }
            url.to_string()
        }
        Err(_) => match raw.split_once("://") {
            Some((scheme, _)) => format!("{scheme}://***"),
            None => raw.to_string(),
        },
    }
}

/// Masks `user:password@` inside free text such as a driver's error message.
pub fn redact_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, word) in text.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        if word.contains("://") && word.contains('@') {
            out.push_str(&redact_url(word));
        } else {
            out.push_str(word);
        }
    }
    out
}

/// A document URL as it may appear in logs: no credentials, no query string
/// (signed URLs keep tokens there), no fragment.
pub fn redact_document_url(raw: &str) -> String {
    match Url::parse(raw) {
        Ok(mut url) => {
            let had_query = url.query().is_some();
            url.set_query(None);
            url.set_fragment(None);
            let _ = url.set_username("");
            let _ = url.set_password(None);
            let mut s = url.to_string();
            if had_query {
                s.push_str("?…");
            }
            s
        }
        Err(_) => "<not a URL>".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_password_in_url() {
        let s = redact_url("postgres://app:s3cret@db:5432/loans?sslmode=require");
        assert!(!s.contains("s3cret"), "{s}");
        assert!(s.contains("app:***@db"), "{s}");
    }

    #[test]
    fn masks_secret_query_parameters() {
        let s = redact_url("s3://bucket/p?secret_key=abc&region=x");
        assert!(!s.contains("abc"), "{s}");
        assert!(s.contains("region=x"));
    }

    #[test]
    fn masks_urls_inside_text() {
        let s = redact_text("cannot connect to postgres://u:pw@h/db now");
        assert!(!s.contains("pw@"), "{s}");
    }
}
