//! Pagination of lists that grow with the fleet (sites, devices, points,
//! gaps, alerts, tokens): `?limit=N&cursor=C`.
//!
//! Pages are keyset pages: a list is ordered by a unique key, and the cursor
//! is the key of the last item of the previous page, so a page never skips
//! or repeats an item when others are added meanwhile. The cursor is opaque
//! to clients (hex of a JSON array of the key's parts); a response carries
//! `next_cursor`, `null` on the last page.

use axum::extract::rejection::QueryRejection;
use axum::extract::Query;
use serde::Deserialize;

use super::error::{bad_query, AppError};

/// Items per page when the client does not say.
pub const DEFAULT_LIMIT: usize = 100;
/// Most items per page.
pub const MAX_LIMIT: usize = 1000;

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page, 1 to 1000 (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    /// The `next_cursor` of the previous page, unchanged.
    #[param(pattern = "^([0-9a-f]{2})*$")]
    cursor: Option<String>,
}

/// A requested page: how many items, and after which key.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub limit: usize,
    /// The key parts of the last item already seen; `None` on the first page.
    pub after: Option<Vec<String>>,
}

impl Page {
    pub fn from_query(query: Result<Query<PageQuery>, QueryRejection>) -> Result<Self, AppError> {
        let Query(query) = query.map_err(bad_query)?;
        // `?cursor=` (empty) is the first page, as when the parameter is absent.
        let limit = match query.limit.as_deref().filter(|l| !l.is_empty()) {
            None => DEFAULT_LIMIT,
            Some(text) => match text.parse::<usize>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                _ => {
                    return Err(AppError::BadRequest(format!(
                        "`limit` must be a whole number from 1 to {MAX_LIMIT}, got {text:?}"
                    )))
                }
            },
        };
        let after = query
            .cursor
            .as_deref()
            .filter(|c| !c.is_empty())
            .map(decode_cursor)
            .transpose()?;
        Ok(Self { limit, after })
    }

    /// The `after` key, checked to have `parts` parts.
    pub fn after_key(&self, parts: usize) -> Result<Option<&[String]>, AppError> {
        match &self.after {
            None => Ok(None),
            Some(key) if key.len() == parts => Ok(Some(key)),
            Some(_) => Err(invalid_cursor()),
        }
    }

    /// Rows to fetch: one more than the page, to learn whether another follows.
    pub fn fetch_limit(&self) -> i64 {
        self.limit as i64 + 1
    }

    /// Cut `items` (fetched with [`Page::fetch_limit`]) to the page and give
    /// the cursor of the next page, if there is one.
    pub fn finish<T>(
        &self,
        mut items: Vec<T>,
        key: impl Fn(&T) -> Vec<String>,
    ) -> (Vec<T>, Option<String>) {
        if items.len() <= self.limit {
            return (items, None);
        }
        items.truncate(self.limit);
        let next = items.last().map(|last| encode_cursor(&key(last)));
        (items, next)
    }
}

fn invalid_cursor() -> AppError {
    AppError::BadRequest(
        "`cursor` is not valid here; pass the `next_cursor` of the previous page unchanged".into(),
    )
}

pub fn encode_cursor(key: &[String]) -> String {
    let json = serde_json::to_vec(key).expect("strings serialize");
    json.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn decode_cursor(cursor: &str) -> Result<Vec<String>, AppError> {
    if cursor.len() % 2 != 0 || cursor.len() > 4096 {
        return Err(invalid_cursor());
    }
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = cursor
        .as_bytes()
        .chunks(2)
        .map(|pair| Some(hex(pair[0])? << 4 | hex(pair[1])?))
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(invalid_cursor)?;
    serde_json::from_slice(&bytes).map_err(|_| invalid_cursor())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(limit: Option<&str>, cursor: Option<&str>) -> Result<Page, AppError> {
        Page::from_query(Ok(Query(PageQuery {
            limit: limit.map(str::to_owned),
            cursor: cursor.map(str::to_owned),
        })))
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let key = vec!["site-1".to_owned(), "bms/1".to_owned()];
        assert_eq!(decode_cursor(&encode_cursor(&key)).unwrap(), key);
        assert!(decode_cursor("zz").is_err());
        assert!(decode_cursor("abc").is_err());
        assert!(decode_cursor("7b7d").is_err(), "an object is not a key");
        assert!(
            decode_cursor("𥮃Ï\u{96}Æ\u{7f}è-").is_err(),
            "not hex, and not one byte per char"
        );
    }

    #[test]
    fn limits_default_and_are_bounded() {
        assert_eq!(page(None, None).unwrap().limit, DEFAULT_LIMIT);
        assert_eq!(page(Some("5"), None).unwrap().limit, 5);
        for bad in ["0", "1001", "-1", "ten"] {
            assert!(page(Some(bad), None).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_page_is_cut_to_its_limit_with_the_cursor_of_its_last_item() {
        let page = page(Some("2"), None).unwrap();
        let key = |s: &&str| vec![s.to_string()];
        let (items, next) = page.finish(vec!["a", "b", "c"], key);
        assert_eq!(items, vec!["a", "b"]);
        assert_eq!(decode_cursor(&next.unwrap()).unwrap(), vec!["b"]);
        let (items, next) = page.finish(vec!["a", "b"], key);
        assert_eq!(items.len(), 2);
        assert!(next.is_none());
    }

    #[test]
    fn a_cursor_of_another_list_is_refused() {
        let page = page(None, Some(&encode_cursor(&["a".to_owned()]))).unwrap();
        assert!(page.after_key(1).unwrap().is_some());
        assert!(page.after_key(2).is_err());
    }
}
