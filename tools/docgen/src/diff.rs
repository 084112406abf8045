//! A unified diff of two texts, enough for a person to see what `docgen` would change: lines
//! matched by their longest common subsequence, hunks with a few lines of context. The pages
//! are a few hundred lines, so the quadratic table is small.

/// Lines of unchanged context around each change.
const CONTEXT: usize = 2;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Same,
    Removed,
    Added,
}

/// `--- old_name` / `+++ new_name` and `@@ -a,b +c,d @@` hunks; empty when the texts are equal.
pub fn unified(old_name: &str, old: &str, new_name: &str, new: &str) -> String {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let ops = edit_script(&a, &b);
    if ops.iter().all(|op| *op == Op::Same) {
        return String::new();
    }
    // Positions in `a` and `b` before each op, to number the hunks.
    let mut at = Vec::with_capacity(ops.len() + 1);
    let (mut i, mut j) = (0, 0);
    for op in &ops {
        at.push((i, j));
        match op {
            Op::Same => (i, j) = (i + 1, j + 1),
            Op::Removed => i += 1,
            Op::Added => j += 1,
        }
    }
    at.push((i, j));

    let mut out = format!("--- {old_name}\n+++ {new_name}\n");
    let mut k = 0;
    while let Some(first) = (k..ops.len()).find(|&n| ops[n] != Op::Same) {
        // A hunk runs until more than 2 * CONTEXT unchanged lines follow a change.
        let start = first.saturating_sub(CONTEXT);
        let mut end = first;
        let mut n = first;
        while n < ops.len() {
            if ops[n] != Op::Same {
                end = n + 1;
            } else if n - end >= 2 * CONTEXT {
                break;
            }
            n += 1;
        }
        let end = (end + CONTEXT).min(ops.len());
        let ((a0, b0), (a1, b1)) = (at[start], at[end]);
        out.push_str(&format!(
            "@@ -{},{} +{},{} @@\n",
            a0 + 1,
            a1 - a0,
            b0 + 1,
            b1 - b0
        ));
        for n in start..end {
            let (i, j) = at[n];
            match ops[n] {
                Op::Same => out.push_str(&format!(" {}\n", a[i])),
                Op::Removed => out.push_str(&format!("-{}\n", a[i])),
                Op::Added => out.push_str(&format!("+{}\n", b[j])),
            }
        }
        k = end;
    }
    out
}

/// The shortest list of keeps, removals and additions that turns `a` into `b`.
fn edit_script(a: &[&str], b: &[&str]) -> Vec<Op> {
    // lcs[i][j]: length of the longest common subsequence of a[i..] and b[j..].
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut ops = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            ops.push(Op::Same);
            (i, j) = (i + 1, j + 1);
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            // Removals first, as diff(1) prints them.
            ops.push(Op::Removed);
            i += 1;
        } else {
            ops.push(Op::Added);
            j += 1;
        }
    }
    ops
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_texts_have_no_diff() {
        assert_eq!(unified("a", "x\ny\n", "b", "x\ny\n"), "");
    }

    #[test]
    fn a_changed_line_shows_with_its_context_and_position() {
        let old = "1\n2\n3\n4\n5\n6\n7\n8\n";
        let new = "1\n2\n3\n4\nfive\n6\n7\n8\n";
        assert_eq!(
            unified("old", old, "new", new),
            "--- old\n+++ new\n@@ -3,5 +3,5 @@\n 3\n 4\n-5\n+five\n 6\n 7\n"
        );
    }

    #[test]
    fn distant_changes_make_separate_hunks() {
        let old = "a\n1\n2\n3\n4\n5\n6\nb\n";
        let new = "A\n1\n2\n3\n4\n5\n6\nB\n";
        let diff = unified("o", old, "n", new);
        assert_eq!(diff.matches("@@ -").count(), 2, "{diff}");
        assert!(diff.contains("@@ -1,3 +1,3 @@\n-a\n+A\n 1\n 2\n"), "{diff}");
        assert!(diff.contains("@@ -6,3 +6,3 @@\n 5\n 6\n-b\n+B\n"), "{diff}");
    }
}
