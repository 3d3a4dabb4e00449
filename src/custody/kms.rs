//! AWS KMS as custodian: `Encrypt`/`Decrypt` of the 32-byte secret under a KMS key, with the
//! recipient as encryption context. Credentials, region and endpoint come from the usual AWS
//! chain (`AWS_REGION`, profiles, roles; `AWS_ENDPOINT_URL_KMS` for a private endpoint); a
//! key ARN names its own region, which then wins.
//!
//! Before each use the key's state is read (`DescribeKey`): KMS refuses a disabled key
//! itself, but saying so by name is clearer, and the ARN it returns is what the identity
//! file and the audit log record.

use std::future::Future;
use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_kms::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::KeyState;
use aws_sdk_kms::Client;
use zeroize::Zeroizing;

use super::CustodyError;
use crate::keys::Recipient;

/// Encryption-context key that binds the wrapped secret to its recipient.
const CONTEXT_KEY: &str = "smpfs-recipient";
/// Longest a KMS call may take, retries included.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Wraps `secret` under `key` (id, ARN, alias); returns the key's ARN and the ciphertext.
pub(super) fn wrap(
    key: &str,
    secret: &[u8; 32],
    recipient: &Recipient,
) -> Result<(String, Vec<u8>), CustodyError> {
    block_on(async {
        let (client, region) = client(key).await?;
        let arn = enabled_key_arn(&client, key, &region).await?;
        let out = client
            .encrypt()
            .key_id(&arn)
            .plaintext(Blob::new(secret.to_vec()))
            .encryption_context(CONTEXT_KEY, recipient.to_string())
            .send()
            .await
            .map_err(|e| explain("Encrypt", &arn, &region, e))?;
        let blob = out.ciphertext_blob().ok_or_else(|| CustodyError::Kms {
            operation: "Encrypt",
            key: arn.clone(),
            message: "the reply holds no ciphertext".into(),
        })?;
        Ok((arn.clone(), blob.as_ref().to_vec()))
    })
}

/// Unwraps `blob` with the key `arn`; fails if the key is not enabled or refuses.
pub(super) fn unwrap(
    arn: &str,
    blob: &[u8],
    recipient: &Recipient,
) -> Result<Zeroizing<[u8; 32]>, CustodyError> {
    block_on(async {
        let (client, region) = client(arn).await?;
        let arn = enabled_key_arn(&client, arn, &region).await?;
        let out = client
            .decrypt()
            .key_id(&arn)
            .ciphertext_blob(Blob::new(blob.to_vec()))
            .encryption_context(CONTEXT_KEY, recipient.to_string())
            .send()
            .await
            .map_err(|e| explain("Decrypt", &arn, &region, e))?;
        // Wiped when dropped; the reply's JSON text (base64) the SDK parsed it from is
        // ordinary heap memory (docs/SECURITY.md).
        let plaintext = Zeroizing::new(out.plaintext.map(Blob::into_inner).unwrap_or_default());
        let mut secret = Zeroizing::new([0u8; 32]);
        if plaintext.len() != secret.len() {
            return Err(CustodyError::KmsWrongCiphertext { key: arn });
        }
        secret.copy_from_slice(&plaintext);
        Ok(secret)
    })
}

/// A client for the region `key` names (if it is an ARN) or the default chain's.
async fn client(key: &str) -> Result<(Client, String), CustodyError> {
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).timeout_config(
        TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .operation_timeout(TIMEOUT)
            .build(),
    );
    if let Some(region) = arn_region(key) {
        loader = loader.region(Region::new(region.to_owned()));
    }
    let config = loader.load().await;
    let region = config
        .region()
        .map(ToString::to_string)
        .ok_or(CustodyError::KmsNoRegion)?;
    Ok((Client::new(&config), region))
}

/// The region field of an ARN (`arn:PARTITION:kms:REGION:ACCOUNT:…`).
fn arn_region(key: &str) -> Option<&str> {
    let mut fields = key.strip_prefix("arn:")?.split(':');
    let (_partition, service, region) = (fields.next()?, fields.next()?, fields.next()?);
    (service == "kms" && !region.is_empty()).then_some(region)
}

/// The ARN of `key`, if the key exists here and is enabled.
async fn enabled_key_arn(client: &Client, key: &str, region: &str) -> Result<String, CustodyError> {
    let described = client.describe_key().key_id(key).send().await;
    let metadata = match described {
        Ok(out) => out.key_metadata,
        // A caller allowed to use the key but not to describe it goes on: the use itself
        // then says whether it may.
        Err(SdkError::ServiceError(e)) if e.err().code() == Some("AccessDeniedException") => {
            return Ok(key.to_owned());
        }
        Err(e) => return Err(explain("DescribeKey", key, region, e)),
    };
    let metadata = metadata.ok_or_else(|| CustodyError::Kms {
        operation: "DescribeKey",
        key: key.to_owned(),
        message: "the reply holds no key metadata".into(),
    })?;
    let arn = metadata.arn().unwrap_or(key).to_owned();
    match metadata.key_state() {
        Some(KeyState::Enabled) | None => Ok(arn),
        Some(state) => Err(CustodyError::KmsKeyNotEnabled {
            key: arn,
            state: state.as_str().to_owned(),
        }),
    }
}

/// Says what a failed KMS call means for the user.
fn explain<E, R>(
    operation: &'static str,
    key: &str,
    region: &str,
    error: SdkError<E, R>,
) -> CustodyError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    let key = key.to_owned();
    if crate::backend::s3::no_credentials(&error) {
        return CustodyError::Kms {
            operation,
            key,
            message: crate::backend::s3::NO_CREDENTIALS.into(),
        };
    }
    let service = match &error {
        SdkError::ServiceError(service) => service,
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => {
            let cause =
                std::iter::successors(Some(&error as &(dyn std::error::Error + 'static)), |e| {
                    e.source()
                })
                .last()
                .map(ToString::to_string)
                .unwrap_or_default();
            return CustodyError::Kms {
                operation,
                key,
                message: format!(
                    "cannot reach AWS KMS in {region} ({cause}); check the network, or \
                     AWS_ENDPOINT_URL_KMS for a private endpoint"
                ),
            };
        }
        _ => {
            return CustodyError::Kms {
                operation,
                key,
                message: DisplayErrorContext(&error).to_string(),
            }
        }
    };
    let message = service.err().message().unwrap_or("").to_owned();
    match service.err().code() {
        Some("NotFoundException") => CustodyError::KmsNotFound {
            key,
            region: region.to_owned(),
        },
        Some("DisabledException") => CustodyError::KmsKeyNotEnabled {
            key,
            state: "Disabled".into(),
        },
        Some("KMSInvalidStateException") => CustodyError::KmsKeyNotEnabled {
            key,
            state: format!("not usable ({message})"),
        },
        Some("AccessDeniedException") => CustodyError::KmsAccessDenied {
            operation,
            key,
            message,
        },
        Some("InvalidCiphertextException" | "IncorrectKeyException") => {
            CustodyError::KmsWrongCiphertext { key }
        }
        code => CustodyError::Kms {
            operation,
            key,
            message: format!("{}: {message}", code.unwrap_or("error")),
        },
    }
}

/// Runs `future` on a private single-threaded runtime in a thread of its own, so callers
/// need no runtime and may be inside one; the thread and runtime are gone when it returns
/// (the mount daemonizes after loading its identity).
fn block_on<T: Send>(future: impl Future<Output = T> + Send) -> T {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a single-threaded tokio runtime starts")
                    .block_on(future)
            })
            .join()
            .expect("the KMS thread does not panic")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_region_comes_from_a_kms_arn_only() {
        assert_eq!(
            arn_region("arn:aws:kms:eu-central-1:111122223333:key/1234"),
            Some("eu-central-1")
        );
        assert_eq!(
            arn_region("arn:aws-us-gov:kms:us-gov-west-1:1:alias/x"),
            Some("us-gov-west-1")
        );
        assert_eq!(arn_region("alias/smpfs"), None);
        assert_eq!(arn_region("arn:aws:s3:::bucket"), None);
        assert_eq!(arn_region("1234abcd-12ab-34cd-56ef-1234567890ab"), None);
    }
}
