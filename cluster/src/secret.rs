//! The cluster password. Its `Debug` and `Display` print a placeholder so that it can never
//! reach a log line, an error message or a Terraform diagnostic by accident.

use std::fmt;

/// A secret string (the cluster password). Read it with [`Password::expose`] only where it
/// is sent to redis or written to a mode-0600 config file.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub fn new(value: impl Into<String>) -> Self {
        Password(value.into())
    }

    /// The clear text. Callers must not log or format it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

impl fmt::Display for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_password() {
        let p = Password::new("hunter2");
        assert!(!format!("{p:?}").contains("hunter2"));
        assert!(!format!("{p}").contains("hunter2"));
        assert!(!format!("{:?}", Some(p.clone())).contains("hunter2"));
        assert_eq!(p.expose(), "hunter2");
    }
}
