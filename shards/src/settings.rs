//! Settings declared once. [`declare_settings!`] writes a struct of
//! settings, its defaults and a table describing each one ([`SettingInfo`]):
//! its key, what it means and how its text is read. The node's TOML file,
//! its flags and its environment variables are all filled from that table
//! (flag `--header-max-bytes`, variable `GUTS_HEADER_MAX_BYTES`, TOML key
//! `header_max_bytes` in the struct's section), and so are
//! `guts-node config show` and docs/configuration.md. A setting's unit is
//! the last word of its key.

use std::net::SocketAddr;
use std::path::PathBuf;

/// One setting, as the flags, the environment, the TOML file and the docs
/// see it.
#[derive(Debug, Clone, Copy)]
pub struct SettingInfo {
    /// TOML key; the flag and the environment variable are derived from it.
    pub key: &'static str,
    /// What it means (the doc comment of its field, one line per line).
    pub doc: &'static str,
    /// The default in words when it is computed at start (empty: the
    /// default value itself says it).
    pub default_doc: &'static str,
    /// Never printed (`config show` prints `<redacted>`).
    pub secret: bool,
    /// A flag that takes no value (`--consensus-enabled`): a boolean.
    pub is_switch: bool,
    /// Whether a text is a valid value, and why not.
    pub check: fn(&str) -> Result<(), String>,
}

impl SettingInfo {
    /// `--header-max-bytes`, without the dashes.
    pub fn flag(&self) -> String {
        self.key.replace('_', "-")
    }

    /// `GUTS_HEADER_MAX_BYTES`.
    pub fn env(&self) -> String {
        format!("GUTS_{}", self.key.to_ascii_uppercase())
    }

    /// The first sentence-line of the doc, for `--help`.
    pub fn summary(&self) -> String {
        self.doc
            .lines()
            .map(str::trim)
            .take_while(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The whole doc on one line, for a table.
    pub fn doc_line(&self) -> String {
        self.doc
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// A struct written by [`declare_settings!`].
pub trait Settings: Default {
    /// The TOML table its keys live in (empty: the top level).
    const SECTION: &'static str;
    /// Every setting, in declaration order.
    const INFO: &'static [SettingInfo];
    /// Set `key` from text; `None` if there is no such key.
    fn set(&mut self, key: &str, text: &str) -> Option<Result<(), String>>;
    /// The value of `key` as a TOML literal (`None` inside: unset);
    /// `None` if there is no such key.
    fn get(&self, key: &str) -> Option<Option<String>>;
}

/// A type a setting can have: read from text (a flag, a variable, a TOML
/// value), written as a TOML literal.
pub trait SettingValue: Sized {
    /// A flag without a value.
    const IS_SWITCH: bool = false;
    fn parse_setting(text: &str) -> Result<Self, String>;
    /// As a TOML literal; `None`: unset.
    fn to_toml(&self) -> Option<String>;
}

macro_rules! whole_numbers {
    ($($t:ty),*) => {$(
        impl SettingValue for $t {
            fn parse_setting(text: &str) -> Result<Self, String> {
                text.trim().parse::<$t>().map_err(|e| {
                    format!("expected a whole number from 0 to {} ({e})", <$t>::MAX)
                })
            }
            fn to_toml(&self) -> Option<String> {
                Some(self.to_string())
            }
        }
    )*};
}
whole_numbers!(u32, u64, usize);

impl SettingValue for bool {
    const IS_SWITCH: bool = true;
    fn parse_setting(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" | "" => Ok(false),
            _ => Err("expected true or false".into()),
        }
    }
    fn to_toml(&self) -> Option<String> {
        Some(self.to_string())
    }
}

impl SettingValue for PathBuf {
    fn parse_setting(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("expected a path, not an empty string".into());
        }
        Ok(PathBuf::from(text))
    }
    fn to_toml(&self) -> Option<String> {
        Some(toml_string(&self.to_string_lossy()))
    }
}

impl SettingValue for SocketAddr {
    fn parse_setting(text: &str) -> Result<Self, String> {
        text.trim()
            .parse()
            .map_err(|e| format!("expected an address like 127.0.0.1:8080 ({e})"))
    }
    fn to_toml(&self) -> Option<String> {
        Some(toml_string(&self.to_string()))
    }
}

impl<T: SettingValue> SettingValue for Option<T> {
    fn parse_setting(text: &str) -> Result<Self, String> {
        T::parse_setting(text).map(Some)
    }
    fn to_toml(&self) -> Option<String> {
        self.as_ref().and_then(T::to_toml)
    }
}

/// A secret (a private key): its `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl SettingValue for Secret {
    fn parse_setting(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("expected a value, not an empty string".into());
        }
        Ok(Secret(text.to_string()))
    }
    fn to_toml(&self) -> Option<String> {
        Some(toml_string(&self.0))
    }
}

/// `text` as a TOML basic string.
pub fn toml_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Declare a struct of settings once: its fields (with their doc
/// comments, types and defaults), `Default`, and [`Settings`]. Before a
/// field's type, `#[default_doc = "..."]` describes a default computed at
/// start and `#[secret = true]` keeps a value out of every printout.
#[macro_export]
macro_rules! declare_settings {
    (
        $(#[doc = $sdoc:literal])*
        #[section = $section:literal]
        pub struct $name:ident {
            $(
                $(#[doc = $doc:literal])+
                $(#[default_doc = $dd:literal])?
                $(#[secret = $secret:literal])?
                $field:ident : $ty:ty = $default:expr,
            )+
        }
    ) => {
        $(#[doc = $sdoc])*
        #[derive(Debug, Clone)]
        pub struct $name {
            $(
                $(#[doc = $doc])+
                pub $field: $ty,
            )+
        }

        impl Default for $name {
            fn default() -> Self {
                $name {
                    $($field: $default,)+
                }
            }
        }

        impl $crate::settings::Settings for $name {
            const SECTION: &'static str = $section;
            const INFO: &'static [$crate::settings::SettingInfo] = &[
                $(
                    $crate::settings::SettingInfo {
                        key: stringify!($field),
                        doc: concat!($($doc, "\n"),+),
                        default_doc: [$($dd,)? ""][0],
                        secret: [$($secret,)? false][0],
                        is_switch: <$ty as $crate::settings::SettingValue>::IS_SWITCH,
                        check: |text| {
                            <$ty as $crate::settings::SettingValue>::parse_setting(text).map(|_| ())
                        },
                    },
                )+
            ];

            fn set(&mut self, key: &str, text: &str) -> Option<Result<(), String>> {
                match key {
                    $(
                        stringify!($field) => Some(
                            <$ty as $crate::settings::SettingValue>::parse_setting(text)
                                .map(|v| self.$field = v),
                        ),
                    )+
                    _ => None,
                }
            }

            fn get(&self, key: &str) -> Option<Option<String>> {
                match key {
                    $(
                        stringify!($field) => Some(
                            $crate::settings::SettingValue::to_toml(&self.$field),
                        ),
                    )+
                    _ => None,
                }
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::declare_settings! {
        /// Test settings.
        #[section = "t"]
        pub struct T {
            /// A number of bytes.
            ///
            /// More words.
            size_bytes: u64 = 7,
            /// An address.
            #[default_doc = "computed"]
            addr: Option<SocketAddr> = None,
            /// A key.
            #[secret = true]
            key: Option<Secret> = None,
            /// A switch.
            on: bool = false,
        }
    }

    #[test]
    fn the_declaration_fills_the_table_and_reads_text() {
        let info = T::INFO;
        assert_eq!(info.len(), 4);
        assert_eq!(info[0].key, "size_bytes");
        assert_eq!(info[0].flag(), "size-bytes");
        assert_eq!(info[0].env(), "GUTS_SIZE_BYTES");
        assert_eq!(info[0].summary(), "A number of bytes.");
        assert_eq!(info[0].doc_line(), "A number of bytes. More words.");
        assert_eq!(info[1].default_doc, "computed");
        assert!(info[2].secret && !info[1].secret);
        assert!(info[3].is_switch && !info[0].is_switch);
        assert!((info[0].check)("-1").is_err());
        let mut t = T::default();
        assert_eq!(t.get("size_bytes"), Some(Some("7".into())));
        assert_eq!(t.get("addr"), Some(None));
        assert!(t.set("size_bytes", "12").unwrap().is_ok());
        assert_eq!(t.size_bytes, 12);
        let err = t.set("size_bytes", "twelve").unwrap().unwrap_err();
        assert!(err.contains("whole number"), "{err}");
        assert!(t.set("addr", "127.0.0.1:1").unwrap().is_ok());
        assert_eq!(t.get("addr"), Some(Some("\"127.0.0.1:1\"".into())));
        assert!(t.set("nope", "1").is_none());
        assert!(t.set("on", "maybe").unwrap().is_err());
        assert_eq!(format!("{:?}", Secret("x".into())), "<redacted>");
        assert_eq!(toml_string("a\"b\\\u{1}"), "\"a\\\"b\\\\\\u0001\"");
    }
}
