//! Glob patterns over ARNs: `*` any run of characters (`:` and `/` included), `?` one.

use regex::Regex;

/// A compiled glob, anchored at both ends.
pub(super) struct Glob(Regex);

impl Glob {
    /// Compiles `pattern`; every character but `*` and `?` stands for itself.
    pub(super) fn new(pattern: &str) -> Self {
        let mut source = String::with_capacity(pattern.len() + 8);
        source.push('^');
        for c in pattern.chars() {
            match c {
                '*' => source.push_str(".*"),
                '?' => source.push('.'),
                other => source.push_str(&regex::escape(other.encode_utf8(&mut [0; 4]))),
            }
        }
        source.push('$');
        // Only escaped literals, `.` and `.*`: always a valid regex, and linear-time to match.
        Self(Regex::new(&source).unwrap_or_else(|_| Regex::new("$^").expect("a regex that matches nothing")))
    }

    /// Whether the whole of `text` matches.
    pub(super) fn matches(&self, text: &str) -> bool {
        self.0.is_match(text)
    }
}

#[cfg(test)]
mod tests {
    use super::Glob;

    #[test]
    fn star_spans_separators_and_literals_stay_literal() {
        let glob = Glob::new("arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/team-a-*/*");
        assert!(
            glob.matches("arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/team-a-web/0123456789abcdef")
        );
        assert!(
            !glob
                .matches("arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/team-b-web/0123456789abcdef")
        );
        assert!(
            !glob
                .matches("arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/team-a-web/0123456789abcdef")
        );
        assert!(Glob::new("*").matches("anything:at/all"));
        assert!(!Glob::new("a.c").matches("abc"), "a dot is a dot");
        assert!(Glob::new("a?c").matches("abc"));
        assert!(!Glob::new("abc").matches("abcd"), "anchored at the end");
    }
}
