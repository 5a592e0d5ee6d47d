//! Query-string filters shared by the snapshot and stream routes.

use crate::hub::Filter;
use crate::model::Status;

/// Parses `namespace`, `service`, `status` and `zone` (each repeatable, and each also
/// accepting a comma-separated list). Unknown parameters are ignored, so clients can add
/// cache-busting parameters; a bad value is an error message for a 400.
pub fn parse_filter(query: &str) -> Result<Filter, String> {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(query).map_err(|e| format!("malformed query string: {e}"))?;
    let mut filter = Filter::default();
    for (key, value) in pairs {
        let values = value.split(',').map(str::trim).filter(|v| !v.is_empty());
        match key.as_str() {
            "namespace" => filter.namespaces.extend(values.map(str::to_owned)),
            "service" => filter.services.extend(values.map(str::to_owned)),
            "zone" => filter.zones.extend(values.map(str::to_owned)),
            "status" => {
                for word in values {
                    let status = Status::parse(word).ok_or_else(|| {
                        format!(
                            "invalid status {word:?}: expected ready, degraded, booting or offline"
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn empty_query_is_no_filter() {
        assert_eq!(parse_filter("").unwrap(), Filter::default());
    }

    #[test]
    fn unknown_status_is_an_error_that_names_it() {
        let err = parse_filter("status=sleepy").unwrap_err();
        assert!(err.contains("sleepy"), "{err}");
    }
}
