//! One spelling for every closed set of names: enums derive their snake_case names with `strum`, and JSON, metric
//! labels and messages all take them from there, so a JSON value and a label can never disagree.

/// Serialises enums as their `strum` names (`IntoStaticStr`).
macro_rules! serialize_as_name {
    ($($t:ty),+ $(,)?) => {
        $(
            impl serde::Serialize for $t {
                fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                    s.serialize_str(<&'static str>::from(*self))
                }
            }
        )+
    };
}

pub(crate) use serialize_as_name;
