//! Backups in S3 (`s3://bucket/prefix`): the backup store of the aws driver, behind the same
//! [`Store`] trait as a directory. Objects are written with one PutObject each (a reader never
//! sees part of one) and encrypted at rest by S3 (SSE-S3, AES256).

use std::path::Path;

use async_trait::async_trait;
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ServerSideEncryption;
use redisha_cluster::backup::{Store, StoreError};

/// `s3://bucket/prefix` split into bucket and prefix (without slashes at either end);
/// `None` for anything that is not an S3 URL with a bucket.
pub fn parse_s3_url(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("s3://")?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return None;
    }
    Some((bucket.to_string(), prefix.trim_matches('/').to_string()))
}

#[derive(Debug, Clone)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
}

impl S3Store {
    pub fn new(client: aws_sdk_s3::Client, bucket: &str, prefix: &str) -> Self {
        S3Store {
            client,
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
        }
    }

    fn object(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    fn error(&self, what: &str, e: impl std::error::Error) -> StoreError {
        StoreError {
            location: self.location(),
            problem: format!("{what}: {}", DisplayErrorContext(e)),
        }
    }

    async fn put(&self, key: &str, body: ByteStream) -> Result<(), StoreError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(self.object(key))
            .server_side_encryption(ServerSideEncryption::Aes256)
            .body(body)
            .send()
            .await
            .map_err(|e| self.error(&format!("PutObject {key}"), e))?;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<ByteStream>, StoreError> {
        match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.object(key))
            .send()
            .await
        {
            Ok(out) => Ok(Some(out.body)),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
            Err(e) => Err(self.error(&format!("GetObject {key}"), e)),
        }
    }

    /// Every object key under `prefix` (relative to the store's prefix).
    async fn keys(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let full = self.object(prefix);
        let strip = if self.prefix.is_empty() {
            0
        } else {
            self.prefix.len() + 1
        };
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&full)
                .set_continuation_token(token.clone())
                .send()
                .await
                .map_err(|e| self.error("ListObjectsV2", e))?;
            for o in page.contents() {
                if let Some(k) = o.key() {
                    out.push(k.get(strip..).unwrap_or_default().to_string());
                }
            }
            match page.next_continuation_token() {
                Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => break,
            }
        }
        out.sort();
        Ok(out)
    }
}

#[async_trait]
impl Store for S3Store {
    fn location(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }

    async fn put_file(&self, key: &str, from: &Path) -> Result<(), StoreError> {
        let body = ByteStream::from_path(from)
            .await
            .map_err(|e| self.error(&format!("reading {}", from.display()), e))?;
        self.put(key, body).await
    }

    async fn put_bytes(&self, key: &str, data: Vec<u8>) -> Result<(), StoreError> {
        self.put(key, ByteStream::from(data)).await
    }

    async fn get_bytes(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(body) = self.get(key).await? else {
            return Ok(None);
        };
        let data = body
            .collect()
            .await
            .map_err(|e| self.error(&format!("GetObject {key}"), e))?;
        Ok(Some(data.into_bytes().to_vec()))
    }

    async fn get_file(&self, key: &str, to: &Path) -> Result<bool, StoreError> {
        use tokio::io::AsyncWriteExt;
        let Some(body) = self.get(key).await? else {
            return Ok(false);
        };
        let mut file = tokio::fs::File::create(to)
            .await
            .map_err(|e| self.error(&format!("writing {}", to.display()), e))?;
        let mut reader = body.into_async_read();
        tokio::io::copy(&mut reader, &mut file)
            .await
            .map_err(|e| self.error(&format!("GetObject {key}"), e))?;
        file.flush()
            .await
            .map_err(|e| self.error(&format!("writing {}", to.display()), e))?;
        Ok(true)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.keys(prefix).await
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<(), StoreError> {
        for key in self.keys(prefix).await? {
            self.client
                .delete_object()
                .bucket(&self.bucket)
                .key(self.object(&key))
                .send()
                .await
                .map_err(|e| self.error(&format!("DeleteObject {key}"), e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_urls_split_into_bucket_and_prefix() {
        assert_eq!(
            parse_s3_url("s3://b/x/y/"),
            Some(("b".into(), "x/y".into()))
        );
        assert_eq!(parse_s3_url("s3://b"), Some(("b".into(), String::new())));
        assert_eq!(parse_s3_url("s3:///x"), None);
        assert_eq!(parse_s3_url("/var/backups"), None);
    }
}
