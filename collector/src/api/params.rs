//! Query parameters several lists share: comma-separated names (sites,
//! rules) and comma-separated values from a fixed vocabulary (severities,
//! states). Empty parameters and empty items count as absent, as
//! everywhere in the API.

use super::error::AppError;

/// Comma-separated values of the parameter `field`, each one of `allowed`
/// (by its name); `None` when the parameter is absent or empty.
pub fn parse_list<T: Copy>(
    field: &str,
    text: Option<&str>,
    allowed: &[T],
    name: impl Fn(T) -> &'static str,
) -> Result<Option<Vec<T>>, AppError> {
    let Some(text) = text.filter(|t| !t.trim().is_empty()) else {
        return Ok(None);
    };
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let value = allowed
            .iter()
            .copied()
            .find(|v| name(*v) == part)
            .ok_or_else(|| {
                let names: Vec<&str> = allowed.iter().map(|v| name(*v)).collect();
                AppError::BadRequest(format!(
                    "`{field}` takes {} (comma-separated), got {part:?}",
                    names.join(", ")
                ))
            })?;
        out.push(value);
    }
    Ok(Some(out))
}

/// Comma-separated names (sites, rules); `None` when absent or empty.
pub fn name_list(text: Option<&str>) -> Option<Vec<String>> {
    let names: Vec<String> = text?
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    (!names.is_empty()).then_some(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEVERITIES: [&str; 3] = ["info", "warning", "critical"];

    #[test]
    fn list_parameters_take_known_names_only() {
        let parse = |t: Option<&str>| parse_list("severity", t, &SEVERITIES, |s| s);
        assert_eq!(parse(None).unwrap(), None);
        assert_eq!(parse(Some(" ")).unwrap(), None);
        assert_eq!(
            parse(Some("critical, info,")).unwrap(),
            Some(vec!["critical", "info"])
        );
        let AppError::BadRequest(message) = parse(Some("info,loud")).unwrap_err() else {
            panic!("a bad request");
        };
        assert!(
            message.contains("`severity`") && message.contains("\"loud\""),
            "{message}"
        );
    }

    #[test]
    fn name_lists_skip_empty_items() {
        assert_eq!(name_list(None), None);
        assert_eq!(name_list(Some(" , ")), None);
        assert_eq!(
            name_list(Some("site-a, ,site-b")),
            Some(vec!["site-a".to_owned(), "site-b".to_owned()])
        );
    }
}
