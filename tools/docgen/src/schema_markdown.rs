//! The argument and attribute reference of one schema, as markdown in the layout of the
//! Terraform registry (and of hashicorp's tfplugindocs): `## Schema` with Required, Optional and
//! Read-Only lists, then a `### Nested Schema for ...` section, with an anchor, for every nested
//! block and every attribute whose type holds objects.
//!
//! Items keep the schema's declaration order (attributes, then blocks): the provider declares
//! the important arguments first. This module is the only one that reads the provider's schema
//! types.

use std::collections::BTreeMap;

use terraform_provider_redisha::schema::{Attribute, Block, NestedBlock, Nesting};
use terraform_provider_redisha::types::Type;

/// Where an item is listed: what the user must write, may write, or only reads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Group {
    Required,
    Optional,
    ReadOnly,
}

const GROUPS: [Group; 3] = [Group::Required, Group::Optional, Group::ReadOnly];

impl Group {
    fn title(self) -> &'static str {
        match self {
            Group::Required => "Required",
            Group::Optional => "Optional",
            Group::ReadOnly => "Read-Only",
        }
    }

    fn of_attribute(a: &Attribute) -> Group {
        if a.required {
            Group::Required
        } else if a.optional {
            Group::Optional
        } else {
            Group::ReadOnly
        }
    }

    fn of_block(b: &NestedBlock) -> Group {
        if b.min_items > 0 {
            Group::Required
        } else {
            Group::Optional
        }
    }
}

/// `## Schema` and every nested section below it.
pub fn render(block: &Block) -> String {
    let mut out = String::from("## Schema\n");
    let mut nested = String::new();
    for group in GROUPS {
        let items = items(block, group, &[], &mut nested);
        if !items.is_empty() {
            out.push_str(&format!("\n### {}\n\n{items}", group.title()));
        }
    }
    out.push_str(&nested);
    out
}

/// The list items of `block` in `group`; the sections of their nested schemas go to `nested`.
fn items(block: &Block, group: Group, path: &[&str], nested: &mut String) -> String {
    let mut out = String::new();
    for a in block
        .attributes
        .iter()
        .filter(|a| Group::of_attribute(a) == group)
    {
        let mut traits = type_name(&a.ty);
        if a.sensitive {
            traits.push_str(", Sensitive");
        }
        let mut item = format!("- `{}` ({traits}){}", a.name, sentence(&a.description));
        if let Some(fields) = object_fields(&a.ty) {
            let at = [path, &[a.name.as_str()]].concat();
            item.push_str(&see_below("nestedatt", &at));
            nested.push_str(&object_section(fields, group, &at));
        }
        out.push_str(&item);
        out.push('\n');
    }
    for b in block.blocks.iter().filter(|b| Group::of_block(b) == group) {
        let at = [path, &[b.type_name.as_str()]].concat();
        out.push_str(&format!(
            "- `{}` ({}){}{}\n",
            b.type_name,
            block_kind(b),
            sentence(&b.block.description),
            see_below("nestedblock", &at)
        ));
        nested.push_str(&block_section(&b.block, &at));
    }
    out
}

/// The section of a nested block: its own groups, then its own nested sections.
fn block_section(block: &Block, path: &[&str]) -> String {
    let mut out = section_heading("nestedblock", path);
    let mut nested = String::new();
    for group in GROUPS {
        let items = items(block, group, path, &mut nested);
        if !items.is_empty() {
            out.push_str(&format!("\n{}:\n\n{items}", group.title()));
        }
    }
    out.push_str(&nested);
    out
}

/// The section of an object-typed attribute: its fields and their types (objects carry no
/// descriptions; the attribute's own description says what the fields mean).
fn object_section(fields: &BTreeMap<String, Type>, group: Group, path: &[&str]) -> String {
    let mut out = section_heading("nestedatt", path);
    out.push_str(&format!("\n{}:\n\n", group.title()));
    let mut nested = String::new();
    for (name, ty) in fields {
        let mut item = format!("- `{name}` ({})", type_name(ty));
        if let Some(inner) = object_fields(ty) {
            let at = [path, &[name.as_str()]].concat();
            item.push_str(&see_below("nestedatt", &at));
            nested.push_str(&object_section(inner, group, &at));
        }
        out.push_str(&item);
        out.push('\n');
    }
    out.push_str(&nested);
    out
}

fn section_heading(kind: &str, path: &[&str]) -> String {
    format!(
        "\n<a id=\"{}\"></a>\n### Nested Schema for `{}`\n",
        anchor(kind, path),
        path.join(".")
    )
}

fn see_below(kind: &str, path: &[&str]) -> String {
    format!(" (see [below for nested schema](#{}))", anchor(kind, path))
}

fn anchor(kind: &str, path: &[&str]) -> String {
    format!("{kind}--{}", path.join("--"))
}

/// The fields of an object type, or of the objects a collection holds.
fn object_fields(ty: &Type) -> Option<&BTreeMap<String, Type>> {
    match ty {
        Type::Object(fields) => Some(fields),
        Type::List(e) | Type::Set(e) | Type::Map(e) => object_fields(e),
        _ => None,
    }
}

/// The registry's words for a type: `String`, `List of String`, `Map of Number`, ...
fn type_name(ty: &Type) -> String {
    match ty {
        Type::String => "String".into(),
        Type::Number => "Number".into(),
        Type::Bool => "Boolean".into(),
        Type::Dynamic => "Dynamic".into(),
        Type::List(e) => format!("List of {}", type_name(e)),
        Type::Set(e) => format!("Set of {}", type_name(e)),
        Type::Map(e) => format!("Map of {}", type_name(e)),
        Type::Object(_) => "Object".into(),
        Type::Tuple(_) => "Tuple".into(),
    }
}

fn block_kind(b: &NestedBlock) -> String {
    let mut kind = match b.nesting {
        Nesting::Single | Nesting::Group => "Block".to_string(),
        Nesting::List => "Block List".to_string(),
        Nesting::Set => "Block Set".to_string(),
        Nesting::Map => "Block Map".to_string(),
    };
    if b.min_items > 0 {
        kind.push_str(&format!(", Min: {}", b.min_items));
    }
    if b.max_items > 0 {
        kind.push_str(&format!(", Max: {}", b.max_items));
    }
    kind
}

/// A description as it follows an item's name: one space, then the text on one line. Runs of
/// white space are folded: descriptions are written as Rust string continuations, whose
/// indentation is not part of the text.
fn sentence(description: &str) -> String {
    let words: Vec<&str> = description.split_whitespace().collect();
    if words.is_empty() {
        String::new()
    } else {
        format!(" {}", words.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use terraform_provider_redisha::schema::{Attribute, Block, NestedBlock};

    fn sample() -> Block {
        let host = Block::new("A machine.")
            .attribute(Attribute::required("name", Type::String).describe("Host name."));
        Block::new("top")
            .attribute(
                Attribute::required("shards", Type::Number).describe("How   many\n  shards."),
            )
            .attribute(
                Attribute::optional("password", Type::String)
                    .sensitive()
                    .describe("Secret."),
            )
            .attribute(Attribute::optional_computed("spread", Type::String))
            .attribute(Attribute::computed(
                "nodes",
                Type::list(Type::object([
                    ("name", Type::String),
                    ("slots", Type::list(Type::String)),
                ])),
            ))
            .block(NestedBlock::list("host", host).min_items(1))
    }

    #[test]
    fn groups_items_by_what_the_user_writes() {
        let md = render(&sample());
        let required = md.find("### Required").expect("required group");
        let optional = md.find("### Optional").expect("optional group");
        let read_only = md.find("### Read-Only").expect("read-only group");
        assert!(required < optional && optional < read_only, "{md}");
        // A block with a minimum count is required; optional+computed is optional.
        assert!(md[required..optional].contains("- `host` (Block List, Min: 1) A machine."));
        assert!(md[optional..read_only].contains("- `spread` (String)\n"));
        assert!(md[optional..read_only].contains("- `password` (String, Sensitive) Secret."));
    }

    #[test]
    fn descriptions_are_folded_onto_one_line() {
        assert!(render(&sample()).contains("- `shards` (Number) How many shards.\n"));
    }

    #[test]
    fn nested_blocks_and_object_attributes_get_anchored_sections() {
        let md = render(&sample());
        assert!(md.contains("(see [below for nested schema](#nestedblock--host))"));
        assert!(md.contains("<a id=\"nestedblock--host\"></a>\n### Nested Schema for `host`\n\nRequired:\n\n- `name` (String) Host name.\n"));
        assert!(md.contains(
            "- `nodes` (List of Object) (see [below for nested schema](#nestedatt--nodes))"
        ));
        assert!(md.contains("### Nested Schema for `nodes`\n\nRead-Only:\n\n- `name` (String)\n- `slots` (List of String)\n"));
    }
}
