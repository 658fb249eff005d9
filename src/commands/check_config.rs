//! `sio-relay check-config`: validates the configuration and prints the values in force, with
//! secrets masked, so an operator sees what the relay would run with before it runs.

use crate::config::Config;

/// The effective configuration as TOML, with the password of `redis.url` masked.
pub fn render(cfg: &Config) -> String {
    let mut shown = cfg.clone();
    shown.redis.url = mask_password(&cfg.redis.url);
    toml::to_string(&shown).expect("the configuration serializes to TOML")
}

/// `redis://user:secret@host` becomes `redis://user:****@host`.
pub fn mask_password(redis_url: &str) -> String {
    match url::Url::parse(redis_url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("****"));
            parsed.to_string()
        }
        _ => redis_url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_masked() {
        assert_eq!(
            mask_password("redis://relay:s3cret@redis:6379/0"),
            "redis://relay:****@redis:6379/0"
        );
        assert_eq!(
            mask_password("rediss://:s3cret@redis"),
            "rediss://:****@redis"
        );
        assert_eq!(
            mask_password("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
    }

    #[test]
    fn the_rendering_reads_back_as_the_same_configuration() {
        let mut cfg = Config::default();
        cfg.source.consumer = "pod-1".into();
        let text = render(&cfg);
        assert!(text.contains("block = \"2s\""), "{text}");
        let back: Config = toml::from_str(&text).unwrap();
        assert_eq!(back, cfg);
    }
}
