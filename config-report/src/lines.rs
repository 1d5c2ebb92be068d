//! Byte offsets, as the TOML parser's spans give them, to the 1-based line
//! and column a reader looks for.

/// Maps byte offsets to 1-based line and column numbers (the column counts
/// bytes, as the spans do).
pub struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    pub fn new(text: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Self { starts }
    }

    /// The line and column of `offset`; an offset past the end is on the
    /// last line.
    pub fn locate(&self, offset: usize) -> (usize, usize) {
        let line = self.starts.partition_point(|&s| s <= offset);
        (line, offset - self.starts[line - 1] + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_become_one_based_lines_and_columns() {
        let lines = LineIndex::new("a = 1\n\nname = \"x\"\n");
        assert_eq!(lines.locate(0), (1, 1));
        assert_eq!(lines.locate(4), (1, 5));
        assert_eq!(lines.locate(6), (2, 1));
        assert_eq!(lines.locate(14), (3, 8));
    }
}
