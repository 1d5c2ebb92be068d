//! `Pattern`: the globs rules and derived points name sites, devices and
//! points with.

/// A glob over names: `*` any run of characters, `?` one character.
/// `"*"` matches everything.
#[derive(Debug, Clone, PartialEq)]
pub struct Pattern(pub String);

impl Pattern {
    pub fn any() -> Self {
        Pattern("*".into())
    }

    pub fn matches(&self, name: &str) -> bool {
        glob_matches(self.0.as_bytes(), name.as_bytes())
    }
}

/// Iterative glob match with one backtrack point (linear in practice).
fn glob_matches(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == name[n]) {
            p += 1;
            n += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, n));
            p += 1;
        } else if let Some((star_p, star_n)) = star {
            p = star_p + 1;
            n = star_n + 1;
            star = Some((star_p, star_n + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_runs_and_single_characters() {
        let p = |s: &str| Pattern(s.into());
        assert!(p("*").matches(""));
        assert!(p("*").matches("anything"));
        assert!(p("rack-*").matches("rack-1"));
        assert!(!p("rack-*").matches("bms"));
        assert!(p("cell_?_temp").matches("cell_3_temp"));
        assert!(!p("cell_?_temp").matches("cell_10_temp"));
        assert!(p("*_temp*").matches("cell_temp_max"));
        assert!(p("a*b*c").matches("aXbYbZc"));
        assert!(!p("a*b*c").matches("aXbYbZ"));
        assert!(p("site-001").matches("site-001"));
        assert!(!p("site-001").matches("site-0011"));
    }
}
