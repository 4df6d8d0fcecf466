//! The CRD's descriptions as `kubectl explain` should show them.
//!
//! schemars copies doc comments with their line breaks, which were put there to keep the
//! source 100 columns wide. `kubectl explain` wraps text itself, so a hard break mid-sentence
//! comes out as a ragged line (`...one at a` / `time,` / `runs...`). The descriptions are
//! reflowed when the CRD is generated: lines of one paragraph are joined, while paragraph
//! breaks, list items and fenced or indented code keep their lines. Written here rather than
//! taken from a crate: this is the one Markdown rule needed, and the Markdown crates render or
//! parse whole documents instead of rewrapping text in place.

use serde_json::Value;

/// Reflows every `description` string in `value` (a CRD, or any part of one).
pub fn reflow_descriptions(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                match child {
                    Value::String(text) if key == "description" => *text = reflow(text),
                    other => reflow_descriptions(other),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(reflow_descriptions),
        _ => {}
    }
}

/// Joins the lines of each paragraph of `text`, keeping blank lines, list items (`- `,
/// `* `, `1. `), table rows, and code (fenced, or indented by four spaces) as they are.
pub fn reflow(text: &str) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut in_fence = false;
    // Whether the last output line may take the next line's text (an ordinary line).
    let mut open = false;
    for line in text.split('\n') {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") {
            in_fence = !in_fence;
            out.push(line.to_owned());
            open = false;
            continue;
        }
        if in_fence || line.starts_with("    ") || trimmed.starts_with('|') {
            out.push(line.to_owned());
            open = false;
            continue;
        }
        if trimmed.is_empty() {
            out.push(String::new());
            open = false;
            continue;
        }
        if is_list_item(trimmed) {
            out.push(line.trim_end().to_owned());
            open = true;
            continue;
        }
        match out.last_mut() {
            Some(last) if open => {
                last.push(' ');
                last.push_str(trimmed.trim_end());
            }
            _ => {
                out.push(trimmed.trim_end().to_owned());
                open = true;
            }
        }
    }
    out.join("\n")
}

fn is_list_item(line: &str) -> bool {
    if ["- ", "* ", "+ "].iter().any(|marker| line.starts_with(marker)) {
        return true;
    }
    let digits = line.chars().take_while(char::is_ascii_digit).count();
    digits > 0 && (line[digits..].starts_with(". ") || line[digits..].starts_with(") "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_of_a_paragraph_are_joined_and_paragraphs_kept() {
        assert_eq!(
            reflow("Takes instances out one at a\ntime, runs maintenance.\n\nA second\nparagraph."),
            "Takes instances out one at a time, runs maintenance.\n\nA second paragraph."
        );
    }

    #[test]
    fn list_items_start_their_own_lines_and_take_their_continuations() {
        assert_eq!(
            reflow("Either:\n- `Listed`: in the\n  order given;\n- `ByZone`: zone\n  by zone.\n1. first\n2. second"),
            "Either:\n- `Listed`: in the order given;\n- `ByZone`: zone by zone.\n1. first\n2. second"
        );
    }

    #[test]
    fn code_and_tables_keep_their_lines() {
        let text =
            "Example:\n\n```yaml\nspec:\n  instances: []\n```\n\n    indented code\n    more\n| a | b |\n| - | - |";
        assert_eq!(reflow(text), text);
    }

    #[test]
    fn every_description_of_a_value_is_reflowed_and_nothing_else() {
        let mut value = serde_json::json!({
            "description": "one\ntwo",
            "properties": { "x": { "description": "three\nfour", "pattern": "a\nb" } },
            "items": [{ "description": "five\nsix" }],
        });
        reflow_descriptions(&mut value);
        assert_eq!(
            value,
            serde_json::json!({
                "description": "one two",
                "properties": { "x": { "description": "three four", "pattern": "a\nb" } },
                "items": [{ "description": "five six" }],
            })
        );
    }
}
