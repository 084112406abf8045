//! The value codec against Terraform's wire format: unknowns, nulls, nested objects, lists of
//! objects, numbers and dynamic values; bytes checked where Terraform is strict about them.

use terraform_provider_redisha::codec::{decode_json, decode_msgpack, encode_msgpack, CodecError};
use terraform_provider_redisha::{Number, Type, Value};

fn node_type() -> Type {
    Type::object([
        ("name", Type::String),
        ("shard", Type::Number),
        ("slots", Type::list(Type::String)),
    ])
}

fn config_type() -> Type {
    Type::object([
        ("shards", Type::Number),
        ("spread", Type::String),
        ("ok", Type::Bool),
        ("nodes", Type::list(node_type())),
        ("labels", Type::map(Type::String)),
    ])
}

fn roundtrip(v: &Value, ty: &Type) -> Value {
    let bytes = encode_msgpack(v, ty).expect("encode");
    decode_msgpack(&bytes, ty).expect("decode")
}

#[test]
fn unknown_is_the_fixext1_type_0_terraform_writes() {
    let bytes = encode_msgpack(&Value::Unknown, &Type::String).unwrap();
    assert_eq!(bytes, vec![0xd4, 0x00, 0x00]);
    assert_eq!(
        decode_msgpack(&bytes, &Type::Number).unwrap(),
        Value::Unknown
    );
}

#[test]
fn refined_unknowns_decode_as_unknown() {
    // ext type 12 with a map payload: Terraform's refined unknown (e.g. "not null").
    let mut bytes = Vec::new();
    rmpv::encode::write_value(&mut bytes, &rmpv::Value::Ext(12, vec![0x81, 0x01, 0xc3])).unwrap();
    assert_eq!(
        decode_msgpack(&bytes, &Type::String).unwrap(),
        Value::Unknown
    );
}

#[test]
fn null_is_nil_and_empty_dynamic_value_is_null() {
    assert_eq!(
        encode_msgpack(&Value::Null, &config_type()).unwrap(),
        vec![0xc0]
    );
    assert_eq!(decode_msgpack(&[], &config_type()).unwrap(), Value::Null);
    assert_eq!(
        decode_msgpack(&[0xc0], &config_type()).unwrap(),
        Value::Null
    );
}

#[test]
fn objects_always_carry_every_attribute_missing_ones_as_null() {
    let v = Value::object([("shards", Value::from(3i64))]);
    let bytes = encode_msgpack(&v, &config_type()).unwrap();
    let mut rd = &bytes[..];
    let raw = rmpv::decode::read_value(&mut rd).unwrap();
    let keys: Vec<String> = raw
        .as_map()
        .unwrap()
        .iter()
        .map(|(k, _)| k.as_str().unwrap().to_string())
        .collect();
    assert_eq!(keys, ["labels", "nodes", "ok", "shards", "spread"]);
    let back = decode_msgpack(&bytes, &config_type()).unwrap();
    assert_eq!(back.get("shards"), &Value::from(3i64));
    assert!(back.get("spread").is_null());
}

#[test]
fn nested_lists_of_objects_with_unknowns_and_nulls_roundtrip() {
    let v = Value::object([
        ("shards", Value::Unknown),
        ("spread", Value::Null),
        ("ok", Value::from(true)),
        (
            "nodes",
            Value::list([
                Value::object([
                    ("name", Value::from("s0-0")),
                    ("shard", Value::from(0i64)),
                    ("slots", Value::strings(["0-5460"])),
                ]),
                Value::object([
                    ("name", Value::Unknown),
                    ("shard", Value::Null),
                    (
                        "slots",
                        Value::list([Value::Unknown, Value::from("5461-10922")]),
                    ),
                ]),
                Value::Unknown,
            ]),
        ),
        (
            "labels",
            Value::object([("team", Value::from("sre")), ("tier", Value::Unknown)]),
        ),
    ]);
    let back = roundtrip(&v, &config_type());
    assert_eq!(back, v);
    assert!(!back.is_fully_known());
    assert_eq!(
        back.get("nodes").as_list().unwrap()[1].get("name"),
        &Value::Unknown
    );
}

#[test]
fn numbers_int_float_and_decimal_string() {
    for n in [
        Number::Int(-7),
        Number::Int(i64::MAX),
        Number::Float(0.5),
        Number::Decimal("123456789012345678901234567890".into()),
    ] {
        let v = Value::Number(n);
        assert_eq!(roundtrip(&v, &Type::Number), v);
    }
    // Terraform sends large integers and exact decimals as strings.
    let mut bytes = Vec::new();
    rmpv::encode::write_value(&mut bytes, &rmpv::Value::from("42")).unwrap();
    assert_eq!(
        decode_msgpack(&bytes, &Type::Number).unwrap(),
        Value::Number(Number::Int(42))
    );
    // u64 above i64::MAX stays exact.
    let mut bytes = Vec::new();
    rmpv::encode::write_value(&mut bytes, &rmpv::Value::from(u64::MAX)).unwrap();
    let v = decode_msgpack(&bytes, &Type::Number).unwrap();
    assert_eq!(v.as_number().and_then(Number::as_u64), Some(u64::MAX));
}

#[test]
fn dynamic_values_carry_their_type() {
    let v = Value::object([("a", Value::from("x")), ("b", Value::from(1i64))]);
    let bytes = encode_msgpack(&v, &Type::Dynamic).unwrap();
    let mut rd = &bytes[..];
    let raw = rmpv::decode::read_value(&mut rd).unwrap();
    let pair = raw.as_array().unwrap();
    assert_eq!(
        pair[0],
        rmpv::Value::Binary(br#"["object",{"a":"string","b":"number"}]"#.to_vec())
    );
    assert_eq!(decode_msgpack(&bytes, &Type::Dynamic).unwrap(), v);
}

#[test]
fn type_mismatches_and_unknown_attributes_are_errors_not_panics() {
    let bytes = encode_msgpack(&Value::from("x"), &Type::String).unwrap();
    assert!(matches!(
        decode_msgpack(&bytes, &Type::Bool),
        Err(CodecError::Mismatch { .. })
    ));
    let extra = Value::object([("nope", Value::from(1i64))]);
    assert!(matches!(
        encode_msgpack(&extra, &config_type()),
        Err(CodecError::UnexpectedAttribute { .. })
    ));
    assert!(decode_msgpack(&[0xc1, 0xff], &Type::String).is_err());
    assert!(decode_msgpack(&[0x92], &Type::list(Type::String)).is_err());
}

#[test]
fn json_raw_state_decodes_and_drops_attributes_no_longer_in_schema() {
    let raw = br#"{"shards":3,"spread":null,"ok":true,"gone":"x",
        "nodes":[{"name":"s0-0","shard":0,"slots":["0-16383"]}],"labels":{"a":"b"}}"#;
    let v = decode_json(raw, &config_type()).unwrap();
    assert_eq!(v.get("shards"), &Value::from(3i64));
    assert!(v.get("spread").is_null());
    assert!(v.get("gone").is_null());
    assert_eq!(
        v.get("nodes").as_list().unwrap()[0].get("slots"),
        &Value::strings(["0-16383"])
    );
    // and it encodes back with exactly the schema's attributes
    assert_eq!(roundtrip(&v, &config_type()), v);
}
