//! Typed models: a Rust struct per resource, data source or nested block, whose fields are
//! declared once, with their schema metadata, by `model!`. The same declaration builds the
//! schema block, decodes a `Value` into the struct and encodes it back, so schema and model
//! cannot disagree.
//!
//! ```ignore
//! model! {
//!     pub struct NoteModel("A note kept in state.") {
//!         pub title: Attr<String> = required("The title. Changing it replaces the note.")
//!             .requires_replace(),
//!         pub body: Attr<String> = optional("The text.").sensitive(),
//!         pub id: Attr<String> = computed("Made at create."),
//!     }
//! }
//! ```
//!
//! Every attribute is an `Attr<T>`: known, null, or unknown until apply (config and plans
//! carry unknowns; state never does). `T` is a primitive (`String`, `bool`, `u32`, `u64`,
//! `i64`), a `Vec` or `BTreeMap<String, _>` of them, or another model (an object-typed
//! attribute, or a nested block with `list_block()` / `single_block()`). A model field without
//! a spec (`= ...`) is a plain attribute of an object type. A field whose type is a model and
//! whose spec is `flatten()` puts that model's attributes and blocks at this level, which is
//! how two schemas share a group of arguments.

use std::collections::BTreeMap;

use crate::tfplugin::diagnostics::{AttrPath, Diagnostic, Diagnostics};
use crate::tfplugin::schema::{Attribute, Block, NestedBlock};
use crate::tfplugin::types::Type;
use crate::tfplugin::value::Value;

/// A value of a model's attribute as Terraform sends it.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Attr<T> {
    Known(T),
    #[default]
    Null,
    /// Not known until apply: validate skips it; apply and read never see it.
    Unknown,
}

impl<T> Attr<T> {
    pub fn known(self) -> Option<T> {
        match self {
            Attr::Known(v) => Some(v),
            _ => None,
        }
    }
    pub fn value(&self) -> Option<&T> {
        match self {
            Attr::Known(v) => Some(v),
            _ => None,
        }
    }
    pub fn is_unknown(&self) -> bool {
        matches!(self, Attr::Unknown)
    }
    pub fn is_null(&self) -> bool {
        matches!(self, Attr::Null)
    }
    /// The value, or `default` when null; `None` when unknown.
    pub fn or_default_when_null(self, default: T) -> Option<T> {
        match self {
            Attr::Known(v) => Some(v),
            Attr::Null => Some(default),
            Attr::Unknown => None,
        }
    }
    pub fn as_ref(&self) -> Attr<&T> {
        match self {
            Attr::Known(v) => Attr::Known(v),
            Attr::Null => Attr::Null,
            Attr::Unknown => Attr::Unknown,
        }
    }
}

impl<T> From<T> for Attr<T> {
    fn from(v: T) -> Self {
        Attr::Known(v)
    }
}

impl<T> From<Option<T>> for Attr<T> {
    fn from(v: Option<T>) -> Self {
        v.map_or(Attr::Null, Attr::Known)
    }
}

/// Takes values out of `Attr`s and remembers whether any was unknown, for code that builds
/// something from a config only when all of it is known.
#[derive(Debug)]
pub struct AllKnown(pub bool);

impl Default for AllKnown {
    fn default() -> Self {
        AllKnown(true)
    }
}

impl AllKnown {
    /// The known value; `None` for null and unknown (and an unknown is remembered).
    pub fn take<T: Clone>(&mut self, a: &Attr<T>) -> Option<T> {
        if a.is_unknown() {
            self.0 = false;
        }
        a.value().cloned()
    }
    pub fn all_known(&self) -> bool {
        self.0
    }
}

/// A Rust type that an attribute's value decodes into.
pub trait AttrType: Sized {
    /// The Terraform type of the attribute.
    fn ty() -> Type;
    /// Decodes `v`, which is neither null nor unknown. `None` when it holds an unknown value
    /// inside (no diagnostic) or does not fit the type (a diagnostic on `at`).
    fn decode(v: &Value, name: &str, at: &AttrPath, diags: &mut Diagnostics) -> Option<Self>;
    fn encode(&self) -> Value;
    /// The block of a model type, for nested blocks; `None` for every other type.
    fn block() -> Option<Block> {
        None
    }
}

fn invalid(name: &str, at: &AttrPath, message: String, diags: &mut Diagnostics) {
    diags.push(Diagnostic::error(format!("Invalid {name}"), message).at(at.clone()));
}

fn show(v: &Value) -> String {
    match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("{s:?}"),
        other => format!("{other:?}"),
    }
}

impl AttrType for String {
    fn ty() -> Type {
        Type::String
    }
    fn decode(v: &Value, name: &str, at: &AttrPath, diags: &mut Diagnostics) -> Option<Self> {
        let s = v.as_str().map(str::to_string);
        if s.is_none() {
            invalid(name, at, format!("{name} must be a string"), diags);
        }
        s
    }
    fn encode(&self) -> Value {
        Value::from(self.as_str())
    }
}

impl AttrType for bool {
    fn ty() -> Type {
        Type::Bool
    }
    fn decode(v: &Value, name: &str, at: &AttrPath, diags: &mut Diagnostics) -> Option<Self> {
        let b = v.as_bool();
        if b.is_none() {
            invalid(name, at, format!("{name} must be true or false"), diags);
        }
        b
    }
    fn encode(&self) -> Value {
        Value::from(*self)
    }
}

/// A whole number of some range: `convert` says whether it fits, `range` how the diagnostic
/// describes the numbers that do.
fn whole_number<T>(
    v: &Value,
    name: &str,
    at: &AttrPath,
    diags: &mut Diagnostics,
    convert: impl FnOnce(&crate::tfplugin::value::Number) -> Option<T>,
    range: &str,
) -> Option<T> {
    let n = v.as_number().and_then(convert);
    if n.is_none() {
        let msg = format!("{name} must be a whole number{range}; got {}", show(v));
        invalid(name, at, msg, diags);
    }
    n
}

/// The integer types a number attribute decodes into, with the range their diagnostic names.
macro_rules! whole_number_type {
    ($t:ty, $convert:expr, $range:expr) => {
        impl AttrType for $t {
            fn ty() -> Type {
                Type::Number
            }
            fn decode(
                v: &Value,
                name: &str,
                at: &AttrPath,
                diags: &mut Diagnostics,
            ) -> Option<Self> {
                whole_number(v, name, at, diags, $convert, &$range)
            }
            fn encode(&self) -> Value {
                Value::from(*self)
            }
        }
    };
}

whole_number_type!(u64, |n| n.as_u64(), ", 0 or more");
whole_number_type!(
    u32,
    |n| n.as_u64().and_then(|n| u32::try_from(n).ok()),
    format!(" from 0 to {}", u32::MAX)
);
whole_number_type!(i64, |n| n.as_i64(), "");

impl<T: AttrType> AttrType for Vec<T> {
    fn ty() -> Type {
        Type::list(T::ty())
    }
    fn decode(v: &Value, name: &str, at: &AttrPath, diags: &mut Diagnostics) -> Option<Self> {
        let Some(items) = v.as_list() else {
            invalid(name, at, format!("{name} must be a list"), diags);
            return None;
        };
        // Every element is decoded (so each problem is reported); any unknown or invalid
        // element makes the whole list unknown.
        let mut out = Some(Vec::with_capacity(items.len()));
        for (i, item) in items.iter().enumerate() {
            let decoded = match item {
                Value::Unknown | Value::Null => None,
                item => T::decode(item, name, &at.index(i), diags),
            };
            match (decoded, out.as_mut()) {
                (Some(d), Some(list)) => list.push(d),
                _ => out = None,
            }
        }
        out
    }
    fn encode(&self) -> Value {
        Value::list(self.iter().map(T::encode))
    }
    /// A list block's elements are its model's blocks.
    fn block() -> Option<Block> {
        T::block()
    }
}

impl<T: AttrType> AttrType for BTreeMap<String, T> {
    fn ty() -> Type {
        Type::map(T::ty())
    }
    fn decode(v: &Value, name: &str, at: &AttrPath, diags: &mut Diagnostics) -> Option<Self> {
        let Some(entries) = v.as_map() else {
            invalid(name, at, format!("{name} must be a map"), diags);
            return None;
        };
        let mut out = Some(BTreeMap::new());
        for (k, item) in entries {
            let decoded = match item {
                Value::Unknown | Value::Null => None,
                item => T::decode(item, name, &at.key(k), diags),
            };
            match (decoded, out.as_mut()) {
                (Some(d), Some(map)) => {
                    map.insert(k.clone(), d);
                }
                _ => out = None,
            }
        }
        out
    }
    fn encode(&self) -> Value {
        Value::Map(self.iter().map(|(k, v)| (k.clone(), v.encode())).collect())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// An attribute of an object type (no flags).
    Plain,
    Required,
    Optional,
    Computed,
    OptionalComputed,
    ListBlock,
    SingleBlock,
    Flatten,
}

/// How a model field appears in the schema: attribute flags or nested block settings.
#[derive(Clone)]
pub struct Spec {
    kind: Kind,
    description: &'static str,
    sensitive: bool,
    requires_replace: bool,
    min_items: i64,
    max_items: i64,
    /// For `flatten()`: a change to the flattened block (e.g. other `min_items`).
    adjust: Option<fn(Block) -> Block>,
}

impl Spec {
    fn new(kind: Kind, description: &'static str) -> Self {
        Spec {
            kind,
            description,
            sensitive: false,
            requires_replace: false,
            min_items: 0,
            max_items: 0,
            adjust: None,
        }
    }
    fn with(mut self, change: impl FnOnce(&mut Self)) -> Self {
        change(&mut self);
        self
    }
    /// Hidden in plan output and never logged.
    pub fn sensitive(self) -> Self {
        self.with(|s| s.sensitive = true)
    }
    /// A change of this (top-level) attribute or block replaces the object.
    pub fn requires_replace(self) -> Self {
        self.with(|s| s.requires_replace = true)
    }
    pub fn min_items(self, n: i64) -> Self {
        self.with(|s| s.min_items = n)
    }
    pub fn max_items(self, n: i64) -> Self {
        self.with(|s| s.max_items = n)
    }
    /// For `flatten()`: changes the flattened block before it is merged.
    pub fn adjust(self, f: fn(Block) -> Block) -> Self {
        self.with(|s| s.adjust = Some(f))
    }
    fn is_block(&self) -> bool {
        matches!(self.kind, Kind::ListBlock | Kind::SingleBlock)
    }
}

/// A plain attribute of an object type (the element of a computed list, say).
pub fn plain() -> Spec {
    Spec::new(Kind::Plain, "")
}
pub fn required(description: &'static str) -> Spec {
    Spec::new(Kind::Required, description)
}
pub fn optional(description: &'static str) -> Spec {
    Spec::new(Kind::Optional, description)
}
pub fn computed(description: &'static str) -> Spec {
    Spec::new(Kind::Computed, description)
}
/// Optional in config, filled in by the provider when unset.
pub fn optional_computed(description: &'static str) -> Spec {
    Spec::new(Kind::OptionalComputed, description)
}
/// A nested block written any number of times (`zone { }` `zone { }`); the field is an
/// `Attr<Vec<M>>` of a model `M`.
pub fn list_block() -> Spec {
    Spec::new(Kind::ListBlock, "")
}
/// A nested block written at most once; the field is an `Attr<M>` of a model `M`.
pub fn single_block() -> Spec {
    Spec::new(Kind::SingleBlock, "")
}
/// The field's model's attributes and blocks at this level.
pub fn flatten() -> Spec {
    Spec::new(Kind::Flatten, "")
}

/// What a model's field can be: an `Attr<T>`, or a model flattened into its parent.
pub trait Field: Sized {
    fn add_to(block: Block, name: &'static str, spec: &Spec) -> Block;
    fn decode_from(obj: &Value, name: &'static str, at: &AttrPath, diags: &mut Diagnostics)
        -> Self;
    fn encode_into(&self, name: &'static str, spec: &Spec, out: &mut BTreeMap<String, Value>);
}

impl<T: AttrType> Field for Attr<T> {
    fn add_to(block: Block, name: &'static str, spec: &Spec) -> Block {
        if spec.is_block() {
            // A block field's type is a model; anything else is a mistake in a `model!`,
            // caught by the schema tests (every schema is built there).
            let inner = T::block().unwrap_or_else(|| {
                debug_assert!(false, "{name}: a nested block's field must be a model");
                Block::default()
            });
            let nested = if spec.kind == Kind::ListBlock {
                NestedBlock::list(name, inner)
            } else {
                NestedBlock::single(name, inner)
            };
            let mut nested = nested.min_items(spec.min_items).max_items(spec.max_items);
            nested.requires_replace = spec.requires_replace;
            return block.block(nested);
        }
        let mut a = match spec.kind {
            Kind::Required => Attribute::required(name, T::ty()),
            Kind::Optional => Attribute::optional(name, T::ty()),
            Kind::Computed => Attribute::computed(name, T::ty()),
            Kind::OptionalComputed => Attribute::optional_computed(name, T::ty()),
            _ => Attribute::optional(name, T::ty()),
        }
        .describe(spec.description);
        a.sensitive = spec.sensitive;
        a.requires_replace = spec.requires_replace;
        block.attribute(a)
    }

    fn decode_from(
        obj: &Value,
        name: &'static str,
        at: &AttrPath,
        diags: &mut Diagnostics,
    ) -> Self {
        if obj.is_unknown() {
            return Attr::Unknown;
        }
        match obj.get(name) {
            Value::Unknown => Attr::Unknown,
            Value::Null => Attr::Null,
            v => T::decode(v, name, &at.then(name), diags).map_or(Attr::Unknown, Attr::Known),
        }
    }

    fn encode_into(&self, name: &'static str, spec: &Spec, out: &mut BTreeMap<String, Value>) {
        let v = match self {
            Attr::Known(v) => v.encode(),
            // Terraform never sees a null list block: an empty one instead.
            Attr::Null if spec.kind == Kind::ListBlock => Value::List(Vec::new()),
            Attr::Null => Value::Null,
            Attr::Unknown => Value::Unknown,
        };
        out.insert(name.to_string(), v);
    }
}

/// A struct declared with `model!`.
pub trait Model: Sized {
    /// The schema block: one attribute or nested block per field.
    fn block() -> Block;
    /// The fields of `obj` (an object value; null or unknown make every field so).
    fn decode_fields(obj: &Value, at: &AttrPath, diags: &mut Diagnostics) -> Self;
    fn encode_fields(&self, out: &mut BTreeMap<String, Value>);

    /// Decodes a whole config, plan or state; every problem found, on its attribute.
    fn from_value(v: &Value) -> Result<Self, Diagnostics> {
        let (model, diags) = Self::from_value_lenient(v);
        if diags.has_errors() {
            return Err(diags);
        }
        Ok(model)
    }
    /// Like `from_value`, but also returns the model when some values do not fit (they
    /// decode as unknown), so that validation can go on checking the rest.
    fn from_value_lenient(v: &Value) -> (Self, Diagnostics) {
        let mut diags = Diagnostics::new();
        let model = Self::decode_fields(v, &AttrPath::root(), &mut diags);
        (model, diags)
    }
    fn to_value(&self) -> Value {
        let mut out = BTreeMap::new();
        self.encode_fields(&mut out);
        Value::Map(out)
    }
    /// No value in it, nested ones included, is unknown.
    fn is_fully_known(&self) -> bool {
        self.to_value().is_fully_known()
    }
}

/// Merges a flattened model's block into its parent's.
pub fn merge(mut into: Block, from: Block, spec: &Spec) -> Block {
    let from = match spec.adjust {
        Some(f) => f(from),
        None => from,
    };
    into.attributes.extend(from.attributes);
    into.blocks.extend(from.blocks);
    into
}

/// Declares a model struct and its `Model`, `AttrType` and (flatten) `Field` impls. See the
/// module documentation.
#[macro_export]
macro_rules! model {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident $( ( $desc:expr ) )? {
            $(
                $(#[$fmeta:meta])*
                $fvis:vis $field:ident : $fty:ty $( = $spec:expr )?
            ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Default)]
        $vis struct $name {
            $( $(#[$fmeta])* $fvis $field: $fty, )*
        }

        impl $name {
            #[allow(unused_imports)]
            fn field_specs() -> ::std::vec::Vec<(&'static str, $crate::tfplugin::framework::model::Spec)> {
                use $crate::tfplugin::framework::model::*;
                ::std::vec![ $( (stringify!($field), $crate::model!(@spec $($spec)?)), )* ]
            }
        }

        impl $crate::tfplugin::framework::model::Model for $name {
            fn block() -> $crate::tfplugin::schema::Block {
                #[allow(unused_mut)]
                let mut block = $crate::tfplugin::schema::Block::new($crate::model!(@desc $($desc)?));
                let specs = Self::field_specs();
                let mut _specs = specs.iter();
                $(
                    let (_, spec) = _specs.next().expect("one spec per field");
                    block = <$fty as $crate::tfplugin::framework::model::Field>::add_to(
                        block, stringify!($field), spec);
                )*
                block
            }
            fn decode_fields(
                obj: &$crate::tfplugin::value::Value,
                at: &$crate::tfplugin::diagnostics::AttrPath,
                diags: &mut $crate::tfplugin::diagnostics::Diagnostics,
            ) -> Self {
                let _ = (&obj, &at, &diags);
                $name {
                    $( $field: <$fty as $crate::tfplugin::framework::model::Field>::decode_from(
                        obj, stringify!($field), at, diags), )*
                }
            }
            fn encode_fields(
                &self,
                out: &mut ::std::collections::BTreeMap<::std::string::String, $crate::tfplugin::value::Value>,
            ) {
                let specs = Self::field_specs();
                let mut _specs = specs.iter();
                let _ = &out;
                $(
                    let (_, spec) = _specs.next().expect("one spec per field");
                    $crate::tfplugin::framework::model::Field::encode_into(
                        &self.$field, stringify!($field), spec, out);
                )*
            }
        }

        impl $crate::tfplugin::framework::model::AttrType for $name {
            fn ty() -> $crate::tfplugin::types::Type {
                <$name as $crate::tfplugin::framework::model::Model>::block().object_type()
            }
            fn decode(
                v: &$crate::tfplugin::value::Value,
                name: &str,
                at: &$crate::tfplugin::diagnostics::AttrPath,
                diags: &mut $crate::tfplugin::diagnostics::Diagnostics,
            ) -> ::std::option::Option<Self> {
                if v.as_map().is_none() {
                    diags.push($crate::tfplugin::diagnostics::Diagnostic::error(
                        format!("Invalid {name}"),
                        format!("{name} must be an object"),
                    ).at(at.clone()));
                    return None;
                }
                Some(<$name as $crate::tfplugin::framework::model::Model>::decode_fields(v, at, diags))
            }
            fn encode(&self) -> $crate::tfplugin::value::Value {
                $crate::tfplugin::framework::model::Model::to_value(self)
            }
            fn block() -> ::std::option::Option<$crate::tfplugin::schema::Block> {
                Some(<$name as $crate::tfplugin::framework::model::Model>::block())
            }
        }

        impl $crate::tfplugin::framework::model::Field for $name {
            fn add_to(
                block: $crate::tfplugin::schema::Block,
                _name: &'static str,
                spec: &$crate::tfplugin::framework::model::Spec,
            ) -> $crate::tfplugin::schema::Block {
                $crate::tfplugin::framework::model::merge(
                    block, <$name as $crate::tfplugin::framework::model::Model>::block(), spec)
            }
            fn decode_from(
                obj: &$crate::tfplugin::value::Value,
                _name: &'static str,
                at: &$crate::tfplugin::diagnostics::AttrPath,
                diags: &mut $crate::tfplugin::diagnostics::Diagnostics,
            ) -> Self {
                <$name as $crate::tfplugin::framework::model::Model>::decode_fields(obj, at, diags)
            }
            fn encode_into(
                &self,
                _name: &'static str,
                _spec: &$crate::tfplugin::framework::model::Spec,
                out: &mut ::std::collections::BTreeMap<::std::string::String, $crate::tfplugin::value::Value>,
            ) {
                <$name as $crate::tfplugin::framework::model::Model>::encode_fields(self, out)
            }
        }
    };
    (@spec) => { $crate::tfplugin::framework::model::plain() };
    (@spec $spec:expr) => { $spec };
    (@desc) => { "" };
    (@desc $desc:expr) => { $desc };
}
