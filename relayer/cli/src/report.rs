//! How the command line says an error: once, with each cause that adds something.

/// `error` and its causes on one line, each said once: a cause whose text is already in
/// what was said (an error that prints its source and also returns it as its cause) is
/// not said again.
pub fn error_report(error: &anyhow::Error) -> String {
    let mut said = error.to_string();
    for cause in error.chain().skip(1) {
        let text = cause.to_string();
        if !said.contains(&text) {
            said.push_str(": ");
            said.push_str(&text);
        }
    }
    said
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("reading the config: {0}")]
    struct Repeats(#[source] std::io::Error);

    #[test]
    fn a_cause_already_said_is_not_said_again_and_a_new_one_is() {
        let io = || std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let repeated = anyhow::Error::new(Repeats(io())).context("ferry bridge");
        assert_eq!(error_report(&repeated), "ferry bridge: reading the config: no such file");
        let added = anyhow::Error::new(io()).context("opening ferry.toml");
        assert_eq!(error_report(&added), "opening ferry.toml: no such file");
    }
}
