//! The EC2 instance metadata service (IMDSv2, session tokens handled by the
//! SDK's client): the instance's id, private IP and region, and (in
//! [`crate::lifecycle`]) its target lifecycle state.
//!
//! The endpoint is explicit when given (the node's `--imds-endpoint`, a fake on
//! 127.0.0.1 in tests); otherwise the SDK's own rules apply
//! (`AWS_EC2_METADATA_SERVICE_ENDPOINT`, then the link-local address).

use std::time::Duration;

use aws_config::imds::client::error::ImdsError;

use crate::error::{Error, Result};

/// Path of the instance id.
pub const INSTANCE_ID_PATH: &str = "/latest/meta-data/instance-id";
/// Path of the primary private IPv4 address.
pub const PRIVATE_IP_PATH: &str = "/latest/meta-data/local-ipv4";
/// Path of the region name.
pub const REGION_PATH: &str = "/latest/meta-data/placement/region";

/// IMDS answers from the local hypervisor in milliseconds; a second per
/// attempt tolerates a busy host, and the SDK client retries a few times.
const IMDS_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);
/// Upper bound of one metadata read, retries included.
const IMDS_OPERATION_TIMEOUT: Duration = Duration::from_secs(10);

/// Who and where this instance is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub instance_id: String,
    pub private_ip: String,
    pub region: String,
}

/// A metadata client. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Imds {
    client: aws_config::imds::Client,
}

impl Imds {
    /// A client for `endpoint` (e.g. `http://127.0.0.1:1338`), or for the
    /// SDK's default endpoint when `None`.
    pub fn new(endpoint: Option<&str>) -> Result<Imds> {
        let mut builder = aws_config::imds::Client::builder()
            .connect_timeout(IMDS_ATTEMPT_TIMEOUT)
            .read_timeout(IMDS_ATTEMPT_TIMEOUT)
            .operation_attempt_timeout(IMDS_ATTEMPT_TIMEOUT)
            .operation_timeout(IMDS_OPERATION_TIMEOUT);
        if let Some(url) = endpoint {
            builder = builder
                .endpoint(url)
                .map_err(|e| Error::invalid("IMDS endpoint", format!("{url}: {e}")))?;
        }
        Ok(Imds {
            client: builder.build(),
        })
    }

    /// The value at `path`, trimmed.
    pub async fn get(&self, path: &str) -> Result<String> {
        match self.client.get(path).await {
            Ok(v) => Ok(v.as_ref().trim().to_owned()),
            Err(e) => Err(imds_error(path, e)),
        }
    }

    /// The value at `path`, or `None` when the service answers 404 (the item
    /// does not exist yet, e.g. the lifecycle state before the group sets it).
    pub async fn get_optional(&self, path: &str) -> Result<Option<String>> {
        match self.get(path).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The instance id, private IP and region.
    pub async fn identity(&self) -> Result<Identity> {
        let instance_id = self.get(INSTANCE_ID_PATH).await?;
        let private_ip = self.get(PRIVATE_IP_PATH).await?;
        let region = self.get(REGION_PATH).await?;
        if instance_id.is_empty() || private_ip.is_empty() || region.is_empty() {
            return Err(Error::Imds {
                path: "/latest/meta-data".into(),
                status: None,
                detail: format!(
                    "empty identity (instance id {instance_id:?}, ip {private_ip:?}, region {region:?})"
                ),
            });
        }
        Ok(Identity {
            instance_id,
            private_ip,
            region,
        })
    }
}

fn imds_error(path: &str, err: ImdsError) -> Error {
    let (status, detail) = match &err {
        ImdsError::ErrorResponse(r) => (
            Some(r.response().status().as_u16()),
            format!(
                "the metadata service answered {}",
                r.response().status().as_u16()
            ),
        ),
        other => (None, crate::error::chain(other)),
    };
    Error::Imds {
        path: path.to_owned(),
        status,
        detail,
    }
}
