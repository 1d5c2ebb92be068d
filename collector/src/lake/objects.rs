//! Where the lake's objects live: the bucket (any store speaking the AWS S3
//! API), the key of each site-hour's file, and the upload.
//!
//! Keys are Hive-style partitions, one object per site and UTC hour:
//!
//! ```text
//! <prefix>/samples/site=<site>/date=<YYYY-MM-DD>/hour=<HH>/part-0.parquet
//! ```
//!
//! A key depends only on the site and the hour, so every export of a
//! site-hour (a retry, a rewrite for late data, another exporter instance)
//! replaces the same object. S3 replaces an object atomically on PUT: a
//! reader sees the old file or the new one, never half, never both.

use std::sync::Arc;

use bytes::Bytes;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use time::OffsetDateTime;

use crate::time::timestamp;

/// Where the lake is: bucket, key prefix, and the S3 endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LakeLocation {
    pub bucket: String,
    /// Key prefix without leading or trailing `/` (may be empty).
    pub prefix: String,
    /// An S3-compatible endpoint (MinIO, moto, ...); `None`: AWS, or
    /// `AWS_ENDPOINT` from the environment.
    pub endpoint: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum LocationError {
    #[error("expected s3://bucket[/prefix], got {0:?}")]
    NotS3(String),
}

impl LakeLocation {
    /// `s3://bucket/some/prefix`.
    pub fn parse(url: &str, endpoint: Option<String>) -> Result<Self, LocationError> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| LocationError::NotS3(url.into()))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(LocationError::NotS3(url.into()));
        }
        Ok(Self {
            bucket: bucket.into(),
            prefix: prefix.trim_matches('/').into(),
            endpoint,
        })
    }

    /// The `s3://` URL of the samples table (what Athena's LOCATION and
    /// DuckDB's glob start from).
    pub fn samples_url(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.join("samples"))
    }

    fn join(&self, rest: &str) -> String {
        if self.prefix.is_empty() {
            rest.into()
        } else {
            format!("{}/{rest}", self.prefix)
        }
    }

    /// The key of a site-hour's samples file.
    pub fn samples_key(&self, site: &str, hour_ms: i64) -> String {
        let hour = timestamp(hour_ms);
        self.join(&format!(
            "samples/site={site}/date={}/hour={:02}/part-0.parquet",
            date(hour),
            hour.hour()
        ))
    }
}

fn date(t: OffsetDateTime) -> String {
    format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day())
}

/// The bucket, ready for uploads.
#[derive(Debug, Clone)]
pub struct Lake {
    pub location: LakeLocation,
    store: Arc<dyn ObjectStore>,
}

impl Lake {
    /// Credentials and region from the usual `AWS_*` environment variables
    /// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, ...,
    /// `AWS_ALLOW_HTTP=true` for a plain-HTTP endpoint).
    pub fn open(location: LakeLocation) -> Result<Self, object_store::Error> {
        Self::build(location, AmazonS3Builder::from_env())
    }

    /// With explicit static credentials instead of the environment (test
    /// servers, tools).
    pub fn open_with_key(
        location: LakeLocation,
        access_key_id: &str,
        secret_access_key: &str,
        region: &str,
    ) -> Result<Self, object_store::Error> {
        let builder = AmazonS3Builder::new()
            .with_access_key_id(access_key_id)
            .with_secret_access_key(secret_access_key)
            .with_region(region);
        Self::build(location, builder)
    }

    fn build(
        location: LakeLocation,
        builder: AmazonS3Builder,
    ) -> Result<Self, object_store::Error> {
        let mut builder = builder.with_bucket_name(&location.bucket);
        if let Some(endpoint) = &location.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        Ok(Self {
            location,
            store: Arc::new(builder.build()?),
        })
    }

    /// Write (or replace) one object.
    pub async fn put(&self, key: &str, body: Bytes) -> Result<(), object_store::Error> {
        self.store
            .put(&Path::from(key), PutPayload::from_bytes(body))
            .await?;
        Ok(())
    }

    /// Read one object back whole (tests, tools).
    pub async fn get(&self, key: &str) -> Result<Bytes, object_store::Error> {
        self.store.get(&Path::from(key)).await?.bytes().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_hive_partitions_by_site_date_and_hour() {
        let location = LakeLocation::parse("s3://history/fleet/", None).unwrap();
        assert_eq!(location.bucket, "history");
        assert_eq!(location.prefix, "fleet");
        // 2023-11-14T22:13:20Z -> hour 22
        assert_eq!(
            location.samples_key("site-001", 1_700_000_000_000 / 3_600_000 * 3_600_000),
            "fleet/samples/site=site-001/date=2023-11-14/hour=22/part-0.parquet"
        );
        assert_eq!(location.samples_url(), "s3://history/fleet/samples");
        let bare = LakeLocation::parse("s3://history", None).unwrap();
        assert_eq!(
            bare.samples_key("a", 0),
            "samples/site=a/date=1970-01-01/hour=00/part-0.parquet"
        );
        assert!(LakeLocation::parse("history", None).is_err());
        assert!(LakeLocation::parse("s3:///x", None).is_err());
    }
}
