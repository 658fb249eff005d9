//! Who may replay and drop dead letters from the console.
//!
//! A mutation is a POST with a JSON body and `Authorization: Bearer <token>`. A browser only sends
//! such a request cross-site after a CORS preflight, which the console never answers, and the
//! `Sec-Fetch-Site` and `Origin` headers that browsers add are checked too: a page elsewhere cannot
//! make an operator's browser replay or drop anything, even one that knows the token. Without a
//! configured token the console is read-only.

use hyper::header::{HeaderMap, AUTHORIZATION, CONTENT_TYPE, HOST, ORIGIN};
use hyper::StatusCode;

use crate::config::{read_console_token, HttpConfig};

/// Where the token comes from.
#[derive(Clone, Debug)]
pub enum Token {
    /// None configured: read-only.
    None,
    Fixed(String),
    /// Read at each mutation, so that a rotated Secret is picked up without a restart.
    File(String),
}

impl Token {
    pub fn of(http: &HttpConfig) -> Token {
        if !http.console_token_file.is_empty() {
            Token::File(http.console_token_file.clone())
        } else if !http.console_token.is_empty() {
            Token::Fixed(http.console_token.clone())
        } else {
            Token::None
        }
    }

    pub fn is_configured(&self) -> bool {
        !matches!(self, Token::None)
    }
}

/// Why a mutation is refused: the status and what the page shows.
#[derive(Debug, PartialEq, Eq)]
pub struct Refused {
    pub status: StatusCode,
    pub error: String,
}

fn refused(status: StatusCode, error: impl Into<String>) -> Refused {
    Refused {
        status,
        error: error.into(),
    }
}

/// Checks that a request names the relay by an IP address, `localhost` or one of `allowed`: a
/// page whose own name an attacker made resolve to the relay's address (DNS rebinding) is same-
/// origin with it for the browser, and would otherwise read the console. Requests without a
/// `Host` (not from a browser) pass.
pub fn check_host(headers: &HeaderMap, allowed: &[String]) -> Result<(), Refused> {
    let Some(host) = headers.get(HOST) else {
        return Ok(());
    };
    let host = host.to_str().unwrap_or("");
    let name = match host.strip_prefix('[') {
        Some(v6) => {
            return if v6.contains(']') {
                Ok(())
            } else {
                Err(bad_host(host))
            }
        }
        None => match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        },
    };
    let known = name.parse::<std::net::IpAddr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || allowed.iter().any(|a| a.eq_ignore_ascii_case(name));
    if known {
        Ok(())
    } else {
        Err(bad_host(host))
    }
}

fn bad_host(host: &str) -> Refused {
    refused(
        StatusCode::FORBIDDEN,
        format!(
            "Host {host:?} is not an IP address, localhost or one of http.console_hosts: add it there if the console is reached by this name"
        ),
    )
}

/// Checks a mutation's headers, in this order: cross-site, JSON body, read-only, token.
pub fn check(headers: &HeaderMap, token: &Token) -> Result<(), Refused> {
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
    // Absent on requests not made by a browser (curl), "none" when the user typed the URL.
    if let Some(site) = header("sec-fetch-site") {
        if site != "same-origin" && site != "none" {
            return Err(refused(
                StatusCode::FORBIDDEN,
                format!("cross-site request refused (Sec-Fetch-Site: {site})"),
            ));
        }
    }
    if let Some(origin) = header(ORIGIN.as_str()) {
        let host = header(HOST.as_str()).unwrap_or("");
        let same = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .is_some_and(|authority| authority == host);
        if !same {
            return Err(refused(
                StatusCode::FORBIDDEN,
                format!("cross-site request refused (Origin {origin} is not {host})"),
            ));
        }
    }
    let json = header(CONTENT_TYPE.as_str())
        .and_then(|t| t.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err(refused(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the body must be JSON (Content-Type: application/json)",
        ));
    }
    let expected = match token {
        Token::None => {
            return Err(refused(
                StatusCode::FORBIDDEN,
                "the console is read-only: set http.console_token or http.console_token_file",
            ))
        }
        Token::Fixed(token) => token.clone(),
        Token::File(path) => read_console_token(path).map_err(|problem| {
            refused(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("http.console_token_file: {problem}"),
            )
        })?,
    };
    let given = header(AUTHORIZATION.as_str())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !same_secret(given.as_bytes(), expected.as_bytes()) {
        return Err(refused(
            StatusCode::UNAUTHORIZED,
            "wrong or missing token (Authorization: Bearer <http.console_token>)",
        ));
    }
    Ok(())
}

/// Compares in a time that does not depend on where the first difference is, so that the token
/// cannot be guessed a byte at a time from response times.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef0123";

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    fn status(pairs: &[(&'static str, &str)], token: &Token) -> Option<StatusCode> {
        check(&headers(pairs), token).err().map(|r| r.status)
    }

    #[test]
    fn only_a_same_origin_json_request_with_the_token_passes() {
        let token = Token::Fixed(TOKEN.into());
        let bearer = format!("Bearer {TOKEN}");
        let good = [
            ("content-type", "application/json"),
            ("authorization", bearer.as_str()),
            ("host", "127.0.0.1:9464"),
            ("origin", "http://127.0.0.1:9464"),
            ("sec-fetch-site", "same-origin"),
        ];
        assert_eq!(status(&good, &token), None);
        assert_eq!(status(&good[..2], &token), None, "curl sends neither");

        let mut cross = good;
        cross[4] = ("sec-fetch-site", "cross-site");
        assert_eq!(status(&cross, &token), Some(StatusCode::FORBIDDEN));
        let mut elsewhere = good;
        elsewhere[3] = ("origin", "http://evil.example");
        assert_eq!(status(&elsewhere, &token), Some(StatusCode::FORBIDDEN));
        let mut form = good;
        form[0] = ("content-type", "application/x-www-form-urlencoded");
        assert_eq!(
            status(&form, &token),
            Some(StatusCode::UNSUPPORTED_MEDIA_TYPE)
        );
        let mut wrong = good;
        wrong[1] = ("authorization", "Bearer 0123456789abcdef0124");
        assert_eq!(status(&wrong, &token), Some(StatusCode::UNAUTHORIZED));
        assert_eq!(
            status(&[good[0]], &token),
            Some(StatusCode::UNAUTHORIZED),
            "no token"
        );
        assert_eq!(
            status(&good, &Token::None),
            Some(StatusCode::FORBIDDEN),
            "read-only whatever is sent"
        );
    }

    #[test]
    fn the_console_answers_to_addresses_localhost_and_the_hosts_allowed() {
        let allowed = vec!["relay.internal".to_owned()];
        for host in [
            "127.0.0.1:9464",
            "10.0.0.7",
            "[::1]:9464",
            "localhost:9464",
            "LOCALHOST",
            "relay.internal:80",
        ] {
            assert_eq!(
                check_host(&headers(&[("host", host)]), &allowed),
                Ok(()),
                "{host}"
            );
        }
        for host in [
            "evil.example:9464",
            "relay.internal.evil.example",
            "[::1",
            "",
        ] {
            let refused = check_host(&headers(&[("host", host)]), &allowed).unwrap_err();
            assert_eq!(refused.status, StatusCode::FORBIDDEN, "{host}");
        }
        assert_eq!(
            check_host(&HeaderMap::new(), &[]),
            Ok(()),
            "no Host: curl -0"
        );
    }

    #[test]
    fn a_token_file_is_read_at_each_check() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, format!("{TOKEN}\n")).unwrap();
        let token = Token::File(path.to_str().unwrap().into());
        let bearer = format!("Bearer {TOKEN}");
        let request = [
            ("content-type", "application/json; charset=utf-8"),
            ("authorization", bearer.as_str()),
        ];
        assert_eq!(
            status(&request, &token),
            None,
            "the newline is not the token's"
        );
        std::fs::write(&path, "rotated-rotated-rotated").unwrap();
        assert_eq!(status(&request, &token), Some(StatusCode::UNAUTHORIZED));
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            status(&request, &token),
            Some(StatusCode::SERVICE_UNAVAILABLE)
        );
    }
}
