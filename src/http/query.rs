//! Query-string filters shared by the snapshot and stream routes.

use loco_discovery_core::hub::Filter;
use loco_discovery_core::model::Status;

/// Parses `namespace`, `service`, `status` and `zone` (each repeatable, and each also
/// accepting a comma-separated list), and `preferZone` (ordering only). Unknown parameters are ignored, so clients can add
/// cache-busting parameters; a bad value is an error message for a 400.
pub fn parse_filter(query: &str) -> Result<Filter, String> {
    check_percent_encoding(query)?;
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(query).map_err(|e| format!("malformed query string: {e}"))?;
    let mut filter = Filter::default();
    for (key, value) in pairs {
        let mut values = value.split(',').map(str::trim).filter(|v| !v.is_empty());
        match key.as_str() {
            "namespace" => filter.namespaces.extend(values.map(str::to_owned)),
            "service" => filter.services.extend(values.map(str::to_owned)),
            "zone" => filter.zones.extend(values.map(str::to_owned)),
            "preferZone" => filter.prefer_zone = values.next_back().map(str::to_owned),
            "status" => {
                for word in values {
                    let status = Status::parse(word).ok_or_else(|| {
                        format!(
                            "invalid status {:?}: expected ready, degraded, booting or offline",
                            excerpt(word)
                        )
                    })?;
                    filter.statuses.push(status);
                }
            }
            _ => {}
        }
    }
    Ok(filter)
}

/// Parses a stream route's query: the filters plus `lastEventId` (for clients that
/// cannot set the `Last-Event-ID` header). The header, when given, wins.
pub fn parse_stream_query(
    query: &str,
    header_id: Option<&str>,
) -> Result<(Filter, Option<String>), String> {
    let filter = parse_filter(query)?;
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(query).map_err(|e| format!("malformed query string: {e}"))?;
    let query_id = pairs
        .into_iter()
        .find(|(k, _)| k == "lastEventId")
        .map(|(_, v)| v);
    let id = header_id.map(str::to_owned).or(query_id);
    if let Some(id) = &id {
        validate_event_id(id)?;
    }
    Ok((filter, id.filter(|id| !id.is_empty())))
}

/// Every `%` starts two hex digits, and what they encode is UTF-8: a query string that
/// would otherwise decode to U+FFFD (or keep a stray `%`) is refused.
fn check_percent_encoding(query: &str) -> Result<(), String> {
    let bytes = query.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            decoded.push(bytes[i]);
            i += 1;
            continue;
        }
        let hex = bytes
            .get(i + 1..i + 3)
            .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(byte) => decoded.push(byte),
            None => {
                return Err(format!(
                    "malformed query string: '%' at byte {i} is not followed by two hex digits"
                ))
            }
        }
        i += 3;
    }
    String::from_utf8(decoded)
        .map(|_| ())
        .map_err(|_| "malformed query string: percent-encoded bytes are not UTF-8".into())
}

/// Event ids are short tokens of letters, digits and `.-_:`; anything else cannot have
/// come from this gateway.
fn validate_event_id(id: &str) -> Result<(), String> {
    let ok = id.len() <= 200
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-:".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "malformed Last-Event-ID {:?}: expected an id this gateway sent",
            excerpt(id)
        ))
    }
}

/// The start of a client's value quoted in an error: a 400 body (and anything that
/// logs it) stays small whatever the client sent.
fn excerpt(value: &str) -> String {
    value.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_event_id_comes_from_the_header_or_the_query() {
        let (_, id) = parse_stream_query("lastEventId=12.1&service=a", None).unwrap();
        assert_eq!(id.as_deref(), Some("12.1"));
        let (_, id) = parse_stream_query("lastEventId=12.1", Some("13.2")).unwrap();
        assert_eq!(id.as_deref(), Some("13.2"));
        let (_, id) = parse_stream_query("", Some("")).unwrap();
        assert_eq!(id, None);
    }

    #[test]
    fn malformed_last_event_id_is_rejected() {
        assert!(parse_stream_query("", Some("bad id\n")).is_err());
        assert!(parse_stream_query("lastEventId=%3Cscript%3E", None).is_err());
        assert!(parse_stream_query("", Some(&"9".repeat(300))).is_err());
    }

    #[test]
    fn repeated_and_comma_separated_values_accumulate() {
        let f =
            parse_filter("service=a&service=b,c&status=ready&zone=z1&namespace=loco&x=1").unwrap();
        assert_eq!(f.services, vec!["a", "b", "c"]);
        assert_eq!(f.statuses, vec![Status::Ready]);
        assert_eq!(f.zones, vec!["z1"]);
        assert_eq!(f.namespaces, vec!["loco"]);
    }

    #[test]
    fn invalid_percent_encoding_is_an_error() {
        for bad in [
            "service=%FF",
            "service=%zz",
            "service=a%",
            "service=%C3%28",
            "status=%+1",
        ] {
            assert!(parse_filter(bad).is_err(), "{bad}");
        }
        let f = parse_filter("service=caf%C3%A9&zone=a%2Cb").unwrap();
        assert_eq!(f.services, vec!["café"]);
        assert_eq!(f.zones, vec!["a", "b"]);
    }

    #[test]
    fn empty_query_is_no_filter() {
        assert_eq!(parse_filter("").unwrap(), Filter::default());
    }

    #[test]
    fn unknown_status_is_an_error_that_names_it() {
        let err = parse_filter("status=sleepy").unwrap_err();
        assert!(err.contains("sleepy"), "{err}");
    }

    #[test]
    fn an_unknown_status_is_quoted_short_and_escaped() {
        let err = parse_filter(&format!("status=a%0A{}", "x".repeat(5000))).unwrap_err();
        assert!(err.len() < 200, "{} bytes", err.len());
        assert!(!err.contains('\n') && err.contains("\\n"), "{err}");
    }
}
