//! `sio-relay check-config`: validates the configuration and prints the values in force, with
//! secrets masked, so an operator sees what the relay would run with before it runs.

use crate::config::{mask_password, Config};

/// The effective configuration as TOML, with the passwords of `redis.url` and `redis.urls` and the
/// console's token masked.
pub fn render(cfg: &Config) -> String {
    let mut shown = cfg.clone();
    shown.redis.url = mask_password(&cfg.redis.url);
    shown.redis.urls = cfg.redis.urls.iter().map(|u| mask_password(u)).collect();
    if !shown.http.console_token.is_empty() {
        shown.http.console_token = "****".into();
    }
    toml::to_string(&shown).expect("the configuration serializes to TOML")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rendering_reads_back_as_the_same_configuration() {
        let mut cfg = Config::default();
        cfg.source.consumer = "pod-1".into();
        let text = render(&cfg);
        assert!(text.contains("block = \"2s\""), "{text}");
        let back: Config = toml::from_str(&text).unwrap();
        assert_eq!(back, cfg);
    }

    #[test]
    fn the_consoles_token_is_masked() {
        let mut cfg = Config::default();
        cfg.http.console_token = "0123456789abcdef-secret".into();
        let text = render(&cfg);
        assert!(text.contains("console_token = \"****\""), "{text}");
        assert!(!text.contains("secret"), "{text}");
    }
}
