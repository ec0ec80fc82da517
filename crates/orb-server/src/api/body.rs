//! JSON bodies as objects only: [`Object`] deserializes a JSON object into `T` and refuses
//! everything else, the array form included, which serde's derive would take for a struct
//! (`["*", "ping"]` as `{"target": "*", "command": "ping"}`). The document says "object", so
//! the server holds to it.

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// A `T` that was given as a JSON object.
#[derive(Debug, Default)]
pub(crate) struct Object<T>(pub(crate) T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Fields<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for Fields<T> {
            type Value = T;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map))
            }
        }

        d.deserialize_map(Fields(PhantomData)).map(Object)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::value::RawValue;

    use super::*;

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        n: u32,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        name: String,
        #[serde(default)]
        args: Option<Box<RawValue>>,
        #[serde(default)]
        inner: Object<Inner>,
    }

    #[test]
    fn objects_are_taken_and_arrays_refused_at_every_level() {
        let Object(o) =
            serde_json::from_str::<Object<Outer>>(r#"{"name": "x", "args": [1, {"a": 2}], "inner": {"n": 3}}"#)
                .unwrap();
        assert_eq!((o.name.as_str(), o.args.unwrap().get(), o.inner.0.n), ("x", r#"[1, {"a": 2}]"#, 3));
        let Object(o) = serde_json::from_str::<Object<Outer>>(r#"{"name": "x"}"#).unwrap();
        assert_eq!(o.inner.0.n, 0, "absent: the default");
        for refused in [r#"["x"]"#, r#"{"name": "x", "inner": [3]}"#, r#"{"name": "x", "inner": null}"#, "7", "null"] {
            let e = serde_json::from_str::<Object<Outer>>(refused).unwrap_err();
            assert!(e.to_string().contains("expected a JSON object"), "{refused}: {e}");
        }
        let e = serde_json::from_str::<Object<Outer>>(r#"{"name": "x", "extra": 1}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `extra`"), "{e}");
    }
}
