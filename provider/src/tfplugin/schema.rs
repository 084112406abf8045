//! Schemas for the provider, resources and data sources, and the object type they imply.

use std::collections::BTreeMap;

use crate::tfplugin::diagnostics::AttrPath;
use crate::tfplugin::types::Type;
use crate::tfplugin::value::Value;

#[derive(Debug, Clone, Default)]
pub struct Schema {
    pub version: i64,
    pub block: Block,
}

#[derive(Debug, Clone, Default)]
pub struct Block {
    pub description: String,
    pub attributes: Vec<Attribute>,
    pub blocks: Vec<NestedBlock>,
}

#[derive(Debug, Clone)]
pub struct Attribute {
    pub name: String,
    pub ty: Type,
    pub description: String,
    pub required: bool,
    pub optional: bool,
    pub computed: bool,
    /// Hidden in plan output; the provider never logs such values either.
    pub sensitive: bool,
    /// A change of it replaces the object (framework metadata; top-level attributes only).
    pub requires_replace: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nesting {
    Single,
    List,
    Set,
    Map,
    Group,
}

#[derive(Debug, Clone)]
pub struct NestedBlock {
    pub type_name: String,
    pub block: Block,
    pub nesting: Nesting,
    pub min_items: i64,
    pub max_items: i64,
    /// A change of it replaces the object (framework metadata; top-level blocks only).
    pub requires_replace: bool,
}

impl Attribute {
    fn new(name: &str, ty: Type) -> Self {
        Attribute {
            name: name.to_string(),
            ty,
            description: String::new(),
            required: false,
            optional: false,
            computed: false,
            sensitive: false,
            requires_replace: false,
        }
    }
    pub fn required(name: &str, ty: Type) -> Self {
        Attribute {
            required: true,
            ..Self::new(name, ty)
        }
    }
    pub fn optional(name: &str, ty: Type) -> Self {
        Attribute {
            optional: true,
            ..Self::new(name, ty)
        }
    }
    pub fn computed(name: &str, ty: Type) -> Self {
        Attribute {
            computed: true,
            ..Self::new(name, ty)
        }
    }
    /// Optional in config, filled in by the provider when unset.
    pub fn optional_computed(name: &str, ty: Type) -> Self {
        Attribute {
            optional: true,
            computed: true,
            ..Self::new(name, ty)
        }
    }
    pub fn sensitive(mut self) -> Self {
        self.sensitive = true;
        self
    }
    pub fn requires_replace(mut self) -> Self {
        self.requires_replace = true;
        self
    }
    pub fn describe(mut self, text: &str) -> Self {
        self.description = text.to_string();
        self
    }
}

impl NestedBlock {
    pub fn list(type_name: &str, block: Block) -> Self {
        NestedBlock {
            type_name: type_name.to_string(),
            block,
            nesting: Nesting::List,
            min_items: 0,
            max_items: 0,
            requires_replace: false,
        }
    }
    pub fn single(type_name: &str, block: Block) -> Self {
        NestedBlock {
            nesting: Nesting::Single,
            ..Self::list(type_name, block)
        }
    }
    pub fn min_items(mut self, n: i64) -> Self {
        self.min_items = n;
        self
    }
    pub fn max_items(mut self, n: i64) -> Self {
        self.max_items = n;
        self
    }
    pub fn requires_replace(mut self) -> Self {
        self.requires_replace = true;
        self
    }

    pub fn value_type(&self) -> Type {
        let obj = self.block.object_type();
        match self.nesting {
            Nesting::Single | Nesting::Group => obj,
            Nesting::List => Type::list(obj),
            Nesting::Set => Type::set(obj),
            Nesting::Map => Type::map(obj),
        }
    }
}

impl Block {
    pub fn new(description: &str) -> Self {
        Block {
            description: description.to_string(),
            ..Block::default()
        }
    }
    pub fn attribute(mut self, a: Attribute) -> Self {
        self.attributes.push(a);
        self
    }
    pub fn block(mut self, b: NestedBlock) -> Self {
        self.blocks.push(b);
        self
    }

    /// The object type of a value of this block: one attribute per attribute and nested block.
    pub fn object_type(&self) -> Type {
        let mut attrs: BTreeMap<String, Type> = self
            .attributes
            .iter()
            .map(|a| (a.name.clone(), a.ty.clone()))
            .collect();
        for b in &self.blocks {
            attrs.insert(b.type_name.clone(), b.value_type());
        }
        Type::Object(attrs)
    }

    /// `base` (usually the config) with every computed attribute replaced by `computed[name]`
    /// and any attribute still missing set to null, so the object has exactly the schema's keys.
    pub fn fill(&self, base: &Value, mut computed: BTreeMap<String, Value>) -> Value {
        let mut out = BTreeMap::new();
        for a in &self.attributes {
            let v = match computed.remove(&a.name) {
                Some(v) => v,
                None => base.get(&a.name).clone(),
            };
            out.insert(a.name.clone(), v);
        }
        for b in &self.blocks {
            let v = base.get(&b.type_name).clone();
            let v = match (v, b.nesting) {
                // Nested list and set blocks are never null: an empty collection instead.
                (Value::Null, Nesting::List | Nesting::Set) => Value::List(Vec::new()),
                (Value::Null, Nesting::Map) => Value::Map(BTreeMap::new()),
                (v, _) => v,
            };
            out.insert(b.type_name.clone(), v);
        }
        Value::Map(out)
    }

    /// The plan of a create or update: `proposed` with every computed attribute that the
    /// config leaves unset marked unknown ("known after apply"). Resources whose computed values
    /// do not change on update keep the prior value instead (Terraform's proposal carries it).
    pub fn mark_computed_unknown(&self, config: &Value, proposed: &Value) -> Value {
        let mut out = proposed.clone();
        for a in self.attributes.iter().filter(|a| a.computed) {
            if config.get(&a.name).is_null() {
                out.set(&a.name, Value::Unknown);
            }
        }
        out
    }

    /// The attributes and blocks marked `requires_replace` whose value differs between `prior`
    /// and `planned`: the paths Terraform shows as "forces replacement". Inside a single
    /// nested block that is not marked itself, its marked attributes count one by one (the
    /// block's other attributes change in place), and the block appearing or going away counts
    /// as a change of the block.
    pub fn replace_paths(&self, prior: &Value, planned: &Value) -> Vec<AttrPath> {
        let mut out = Vec::new();
        self.collect_replace_paths(None, prior, planned, &mut out);
        out
    }

    fn collect_replace_paths(
        &self,
        at: Option<&AttrPath>,
        prior: &Value,
        planned: &Value,
        out: &mut Vec<AttrPath>,
    ) {
        let path = |name: &str| match at {
            Some(p) => p.clone().then(name),
            None => AttrPath::attr(name),
        };
        for a in self.attributes.iter().filter(|a| a.requires_replace) {
            if prior.get(&a.name) != planned.get(&a.name) {
                out.push(path(&a.name));
            }
        }
        for b in &self.blocks {
            let (before, after) = (prior.get(&b.type_name), planned.get(&b.type_name));
            if b.requires_replace {
                if before != after {
                    out.push(path(&b.type_name));
                }
            } else if b.nesting == Nesting::Single && b.block.has_replace_attributes() {
                if before.is_null() != after.is_null() {
                    out.push(path(&b.type_name));
                } else if !before.is_null() {
                    b.block
                        .collect_replace_paths(Some(&path(&b.type_name)), before, after, out);
                }
            }
        }
    }

    fn has_replace_attributes(&self) -> bool {
        self.attributes.iter().any(|a| a.requires_replace)
            || self
                .blocks
                .iter()
                .any(|b| b.requires_replace || b.block.has_replace_attributes())
    }

    /// Names of sensitive attributes (top level), for redaction.
    pub fn sensitive_attributes(&self) -> impl Iterator<Item = &str> {
        self.attributes
            .iter()
            .filter(|a| a.sensitive)
            .map(|a| a.name.as_str())
    }
}

impl Schema {
    pub fn new(version: i64, block: Block) -> Self {
        Schema { version, block }
    }
    pub fn value_type(&self) -> Type {
        self.block.object_type()
    }
}
